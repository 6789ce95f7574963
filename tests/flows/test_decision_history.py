"""Decisions that last: a re-evaluation with a stricter gate adds a record, rewrites nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from flows.finetune import finetune
from tasks.core.errors import GateFailed
from tasks.core.registry.history import actor_pipeline, history, index_tags, read_record
from tasks.core.registry.lineage import collect, versions
from tasks.core.tracking import client
from tests.conftest import REPO
from tests.flows.conftest import write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")
MODEL = "tiny-lora"


def snapshot(mlc, run_id: str) -> dict:
    """Everything a reader of a run sees: tags, metrics, params, artifact listing."""
    run = mlc.get_run(run_id)

    def listing(path=None):
        out = []
        for item in mlc.list_artifacts(run_id, path):
            out += listing(item.path) if item.is_dir else [item.path]
        return sorted(out)

    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")}
    return {
        "tags": tags,
        "metrics": run.data.metrics,
        "params": run.data.params,
        "status": run.info.status,
        "artifacts": listing(),
    }


def cli(home, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"LORAFLOW_HOME": str(home.root), "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_stricter_gate_adds_a_refusal_and_leaves_the_champion_as_it_was(home, mirrored, tmp_path):
    mlc = client(home.tracking_uri)
    passing = write_config(
        tmp_path, "a.yaml", in_process=True, gates={"absolute": {"accuracy": 0.0}}
    )
    first = finetune(config_path=str(passing))
    version = mlc.get_model_version(MODEL, "1")
    evaluation = first["evaluation_record"]
    before = {
        "version_tags": dict(version.tags),
        "evaluation": snapshot(mlc, evaluation),
        "training": snapshot(mlc, first["run_id"]),
        "lineage": collect(mlc, f"{MODEL}@champion"),
        "lineage_text": cli(home, "lineage", f"{MODEL}@champion"),
    }
    assert before["version_tags"]["loraflow.evaluation_run_id"] == evaluation

    # Config B: the same model (training cached), a gate it cannot pass.
    stricter = write_config(
        tmp_path, "b.yaml", in_process=True, gates={"absolute": {"accuracy": 1.0}}
    )
    with pytest.raises(GateFailed):
        finetune(config_path=str(stricter))

    # v1's evaluation record, tags and lineage are exactly as before.
    assert dict(mlc.get_model_version(MODEL, "1").tags) == before["version_tags"]
    assert snapshot(mlc, evaluation) == before["evaluation"]
    assert snapshot(mlc, first["run_id"]) == before["training"]
    assert collect(mlc, f"{MODEL}@champion") == before["lineage"]
    assert cli(home, "lineage", f"{MODEL}@champion") == before["lineage_text"]

    # The refusal is its own record, about the same training run, naming config B's sha.
    evaluations = history(mlc, MODEL, kind="evaluation")
    assert [e.outcome for e in evaluations] == ["pass", "fail"]
    refusal = evaluations[1]
    assert refusal.train_run_id == first["run_id"] and refusal.version is None
    config_b = mlflow.artifacts.load_text(f"runs:/{refusal.run_id}/config/resolved.yaml")
    from tasks.core.config.loader import load_config

    assert refusal.config_sha256 == load_config(stricter).sha256 != evaluations[0].config_sha256
    assert "accuracy: 1.0" in config_b
    assert (
        "min_accuracy" in refusal.reason and read_record(mlc, refusal.run_id)["outcome"] == "fail"
    )

    # `models`: v1 once, as champion; the refusal once.
    rows, refused = versions(mlc, MODEL)
    assert [(r.version, r.aliases) for r in rows] == [("1", ("challenger", "champion"))]
    assert [r.run_id for r in refused] == [refusal.run_id]
    listing = cli(home, "models", MODEL)
    assert listing.count(refusal.run_id[:12]) == 1

    # The version's promotion tags are an index: rebuilt from the history they are the same.
    tags = mlc.get_model_version(MODEL, "1").tags
    rebuilt = index_tags(history(mlc, MODEL, "1"))
    assert {k: tags[k] for k in rebuilt if k != "promotion.at"} == {
        k: v for k, v in rebuilt.items() if k != "promotion.at"
    }
    assert rebuilt["promotion.action"] == "promote" and rebuilt["promotion.by"] == actor_pipeline()
