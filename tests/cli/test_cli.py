"""The ``loraflow`` command as a user runs it: a real subprocess, real exit codes, real stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO, write_config

QUICKSTART = REPO / "configs/experiments/sst2-minilm-lora.yaml"


def loraflow(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def nothing_registered(home) -> bool:
    from tasks.core.tracking import client

    return not home.mlflow_db.exists() or client(home.tracking_uri).search_registered_models() == []


def child_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "child.yaml"
    path.write_text(f"extends: {QUICKSTART}\n{text}")
    return path


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        (
            "unknown key",
            "train:\n  batchsize: 8\n",
            ["child.yaml", "train.batchsize", "unknown key", "batch_size"],
        ),
        (
            "wrong type",
            "train:\n  epochs: lots\n",
            ["child.yaml", "train.epochs", "valid number", "'lots'"],
        ),
        (
            "missing data file",
            "data:\n  eval:\n    path: missing.tsv\n",
            ["data.eval.path", "data file not found", "missing.tsv"],
        ),
        (
            "bad choice",
            "train:\n  lr_scheduler: zigzag\n",
            ["train.lr_scheduler", "'linear', 'cosine' or 'constant'", "'zigzag'"],
        ),
    ],
)
def test_bad_config_exits_2_with_one_line(home, tmp_path, case, text, expected):
    result = loraflow("run", child_config(tmp_path, text))
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    for fragment in expected:
        assert fragment in lines[0], (case, lines[0])
    assert nothing_registered(home)


def test_missing_config_exits_2(home):
    result = loraflow("run", "configs/nope.yaml")
    assert result.returncode == 2
    assert error_lines(result) == [f"error: {REPO / 'configs/nope.yaml'}: config file not found"]
    assert nothing_registered(home)


@pytest.mark.slow  # a whole pipeline in a subprocess (~60 s); the flow tests cover the stages
def test_run_prints_summary_peak_memory_and_ui_commands(home, tmp_path, tiny_bert_dir):
    from tasks.core.catalog.mirror import import_folder
    from tasks.core.tracking import client

    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    result = loraflow("run", write_config(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "pipeline finished in" in out and "registered: tiny-lora v1" in out, out
    (memory,) = [line for line in out.splitlines() if "peak memory:" in line]
    pipeline_mb, training_mb = (int(m) for m in re.findall(r"(\d+) MB", memory))
    assert 100 < pipeline_mb < 8000 and 100 < training_mb < 8000, memory
    assert f"sqlite:///{home.mlflow_db}" in out and "prefect server start" in out
    (time_split,) = [line for line in out.splitlines() if "pipeline overhead" in line]
    assert re.search(r"training \d+\.\d s \+ evaluation \d+\.\d s", time_split), time_split
    assert "evaluation/training 0." in time_split or "evaluation/training 1." in time_split
    # Every gate with its figure and threshold (issue 14), and no library noise around it.
    assert "  gates:\n    min_accuracy " in out and ">= 0: pass" in out, out
    assert "training: 12 steps" in out
    noise = ("already exists", "Warning", "%|", "Traceback", "Finished in state")
    assert not [n for n in noise if n in result.stdout + result.stderr], result.stderr[-3000:]
    for stage in ("discover: pinned", "audit: allow", "validate: pass", "gates: pass"):
        assert stage in result.stderr, result.stderr  # the stage decisions, one line each
    assert client(home.tracking_uri).get_registered_model("tiny-lora").aliases == {
        "challenger": 1,
        "champion": 1,
    }


def test_unknown_label_stops_the_flow_with_exit_2(home, tmp_path, tiny_bert_dir):
    from tasks.core.catalog.mirror import import_folder

    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())["data"]
    dev = Path(data["eval"]["path"])
    lines = dev.read_text().splitlines()
    lines[3] = "neutral\tthe film was fine"  # data row 3
    lines[5] = "7\tthe plot was dull"  # data row 5
    dev.write_text("\n".join(lines) + "\n")
    result = loraflow("run", config)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "labels [eval]" in line and "rows 3, 5" in line and "'neutral'" in line, line
    assert nothing_registered(home)


def test_run_against_a_running_server_checks_the_data_at_once(
    home, tmp_path, tiny_bert_dir, prefect_harness
):
    """`run` with a running server (as after `loraflow up`): no temporary server, the flow
    starts at once and stops in its data stage with the one line of the bad row. Here the
    CLI's preload thread may still be importing transformers when the data is read; the
    deterministic checks of that are in tests/cli/test_startup.py and test_preload.py."""
    from prefect.settings import PREFECT_API_URL

    from tasks.core.catalog.mirror import import_folder

    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    config = write_config(tmp_path)
    dev = Path(yaml.safe_load(config.read_text())["data"]["eval"]["path"])
    lines = dev.read_text().splitlines()
    lines[2] = "neutral\tthe film was fine"  # data row 2: the flow stops in its data stage
    dev.write_text("\n".join(lines) + "\n")
    result = loraflow("run", config, env={"PREFECT_API_URL": PREFECT_API_URL.value()})
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "labels [eval]" in line and "(rows 2)" in line and "'neutral'" in line, line
    assert nothing_registered(home)
    # The failed run is on the running server, where its UI shows it.
    from prefect.client.orchestration import get_client

    flow_run_id = re.search(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", result.stderr).group(0)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id).state.is_failed()


def test_validate_every_shipped_config():
    files = sorted(REPO.glob("configs/**/*.yaml"))
    result = loraflow("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(files)


def test_validate_reports_bad_file_with_exit_2(tmp_path):
    bad = child_config(tmp_path, "lora:\n  r: 0\n")
    result = loraflow("validate", QUICKSTART, bad)
    assert result.returncode == 2
    assert "ok " in result.stdout and "lora.r" in result.stderr


def test_hub_import_and_list(home, tiny_bert_dir):
    first = loraflow("hub", "import", tiny_bert_dir, "--repo-id", TINY_REPO)
    assert first.returncode == 0 and first.stdout.startswith("imported:"), first.stderr
    again = loraflow("hub", "import", tiny_bert_dir, "--repo-id", TINY_REPO)
    assert again.stdout.startswith("already present:")
    listing = loraflow("hub", "list")
    assert TINY_REPO in listing.stdout and "license=apache-2.0" in listing.stdout
    bad = loraflow("hub", "import", tiny_bert_dir, "--repo-id", "no-slash")
    assert bad.returncode == 2 and "ORG/NAME" in bad.stderr


def test_serve_on_a_taken_port_exits_2_with_one_line(home, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = loraflow("serve", "any-model", "--port", str(port))
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; use --port"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("ref", ["ORG/", "/name", "just-a-name", "a/b/c"])
def test_audit_of_a_malformed_repo_id_exits_2(home, ref):
    result = loraflow("audit", ref)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [f"error: {ref!r}: name a model as ORG/NAME or ORG/NAME@REVISION"]
