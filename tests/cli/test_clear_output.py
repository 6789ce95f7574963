"""One clear line (issue 14): refusals before training, in seconds; few lines when captured;
tracebacks only with --verbose; tables that fit 80 columns; a bad card that lists fine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import error_lines, nothing_registered
from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO, mirrored, write_config  # noqa: F401 (fixture)


def captured(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``loraflow ARGS`` as a script or CI job sees it: not a terminal, 80 columns."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture
def mirrored_home(home, tiny_bert_dir):
    from tasks.core.catalog.mirror import import_folder

    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    return home


def no_runs(home) -> bool:
    from tasks.core.tracking import client

    mlc = client(home.tracking_uri)
    return mlc.search_runs([e.experiment_id for e in mlc.search_experiments()]) == []


def test_run_with_a_wrong_gate_class_exits_2_in_seconds_before_training(mirrored_home, tmp_path):
    gates = {"absolute": {"accuracy": 0.0, "recall_postive": 0.8}}
    config = write_config(tmp_path, gates=gates)
    started = time.monotonic()
    result = captured("run", config)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert line == (
        f"error: {config}: gates.absolute.recall_postive: 'postive' is not a class of "
        "data.labels; allowed: recall_negative, recall_positive"
    )
    assert elapsed < 30, f"{elapsed:.1f} s"  # no Prefect server, no model loaded
    assert no_runs(mirrored_home) and nothing_registered(mirrored_home)
    print(f"wrong gate class refused in {elapsed:.2f} s")  # the figure the README quotes


def test_verbose_adds_the_traceback(mirrored_home, tmp_path):
    config = write_config(tmp_path, gates={"absolute": {"f1_neutral": 0.5}})
    quiet = captured("run", config)
    loud = captured("run", config, "--verbose")
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and "Traceback (most recent call last)" in loud.stderr
    assert error_lines(quiet) == error_lines(loud)


def test_validate_checks_what_only_training_would_find(mirrored_home, tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        '{"text": "a great film", "label": "positive"}\n{"text": "meh", "label": 9}\n'
    )
    config = write_config(
        tmp_path,
        gates={
            "absolute": {"precision_neutral": 0.5},
            "golden": {"path": str(golden)},
            "slices": [{"name": "lang", "column": "language", "minimum": 0.5}],
        },
        lora={"r": 4, "target_modules": ["q_proj", "value"]},
        train={"batch_size": 100_000_000},
    )
    result = captured("validate", config)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    for fragment in (
        "gates.absolute.precision_neutral: 'neutral' is not a class of data.labels; allowed: "
        "precision_negative, precision_positive",
        f"gates.golden.path: {golden}: line 2: label 9 is not one of",
        "gates.slices[lang].column: 'language' is not a column of the prepared eval split; "
        "allowed: label, text",
        f"lora.target_modules: ['q_proj'] match no layer of {TINY_REPO}; allowed: ",
        "train.batch_size: 100,000,000 is more than the 48 training rows of train.tsv; "
        "allowed: 1..48",
    ):
        assert fragment in line, (fragment, line)
    assert "query" in line and "value" in line  # the layers the model has


def test_duplicate_yaml_keys_exit_2(tmp_path):
    config = write_config(tmp_path)
    text = config.read_text().replace("name: tiny-test\n", "name: tiny-test\nname: other\n")
    config.write_text(text)
    result = captured("validate", config)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert f"{config}: line " in line and "duplicate key 'name'" in line


def test_a_refused_run_prints_a_few_lines_without_a_traceback(mirrored_home, tmp_path):
    config = write_config(tmp_path)
    train = tmp_path / "train.tsv"
    rows = train.read_text().splitlines()
    rows[3] = "1\tthe film was good write to jane.doe@example.com"
    train.write_text("\n".join(rows) + "\n")
    result = captured("run", config, timeout=600)
    shown = lines(result)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(shown) <= 6, "\n".join(shown)
    assert not any("Traceback" in line or "Warning" in line for line in shown), shown
    (error,) = error_lines(result)
    assert "pii [train]: 1 rows hold PII or secrets: email 1 (rows 3)" in error
    assert "data.pii.policy: redact" in error  # how to go on
    (details,) = [line for line in shown if line.startswith("details:")]
    assert "Prefect flow run 'tiny-test: " in details
    assert nothing_registered(mirrored_home)


def test_hub_list_survives_a_malformed_card_in_the_cache(mirrored_home, tiny_bert_dir, tmp_path):
    import shutil

    from tasks.core.catalog.mirror import import_folder, snapshot_path

    copy = Path(shutil.copytree(tiny_bert_dir, tmp_path / "copy"))
    bad = import_folder(copy, "org/broken-card", mirrored_home.hf_hub_cache)
    card = snapshot_path(mirrored_home.hf_hub_cache, bad.repo_id, bad.revision) / "README.md"
    card.unlink()
    card.write_text("---\nlicense: [mit\n---\n")
    listing = captured("hub", "list")
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "org/broken-card@" in listing.stdout and "UNREADABLE: README.md front matter" in (
        listing.stdout
    )
    assert f"{TINY_REPO}@" in listing.stdout and "license=apache-2.0" in listing.stdout
    copy.joinpath("README.md").write_text("---\nlicense: [mit\n---\n")
    refused = captured("hub", "import", copy, "--repo-id", "org/other")
    assert refused.returncode == 2 and "front matter is not valid YAML" in refused.stderr


def test_models_table_fits_80_columns_when_piped(home, tmp_path, mirrored):  # noqa: F811
    from tasks.core.tracking import client
    from tests.serving.models import register_version, untrained_adapter

    mlc = client(home.tracking_uri)
    adapter = untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / "adapter", seed=1)
    version = register_version(mlc, "a-rather-long-model-name", adapter)
    mlc.set_registered_model_alias("a-rather-long-model-name", "champion", version)
    result = captured("models", "a-rather-long-model-name")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "…" not in result.stdout, result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    header = next(line for line in result.stdout.splitlines() if "aliases" in line)
    assert "version" in header and "accuracy" in header
    assert "champion" in result.stdout
