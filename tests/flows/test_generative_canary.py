"""Generative versions through the canary against the live service: a tiny random Llama
fine-tuned by the finetune flow, held-out prompts replayed through /generate, the champion
shadowing the challenger, judged on ROUGE-L agreement and reference feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.finetune import finetune
from flows.promote import promotion
from tasks.core.errors import CanaryRolledBack
from tasks.core.registry.history import history, read_record
from tasks.core.tracking import client
from tests.flows.test_generative_flow import (  # noqa: F401  (fixtures)
    llama_dir,
    llama_mirrored,
    write_chat_config,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")
NAME = "tiny-chat"
POLICY = {
    "kind": "canary-policy",
    "version": "test-gen-1",
    "steps": [50, 100],
    "analysis": {
        "min_requests": 16,
        "min_feedback": 16,
        "settle_seconds": 120,
        "max_error_rate": 0.0,
        "p95_latency_tolerance_ms": 2000,  # generation latency on shared cores jitters
        "agreement_metric": "rouge_l",
        # Two tiny models at 60-100 % exact match agree on about half their one-word answers;
        # a degenerate one on none.
        "min_agreement": 0.35,
        "max_accuracy_drop": 0.2,
    },
    "replay": {"max_requests": 300, "max_seconds": 90, "concurrency": 2},
    "serving": {"poll_seconds": 0.1, "max_wait_ms": 2},
}


def train(folder: Path, seed: int, answer=None, epochs: int = 8) -> str:
    """Fine-tune one version (its own data folder); ``answer`` rewrites every training
    response. Gates are relaxed so that only the canary judges the version against the
    champion."""
    folder.mkdir()
    config = yaml.safe_load(write_chat_config(folder).read_text())
    config["train"] |= {
        "seed": seed,
        "epochs": epochs,
        "launcher": "in-process",
    }  # see write_config
    if answer is not None:
        train_path = Path(config["data"]["train"]["path"])
        rows = [json.loads(line) for line in train_path.read_text().splitlines()]
        for row in rows:
            row["messages"][-1]["content"] = answer(row["messages"][-1]["content"])
        train_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config["gates"] = {"absolute": {}, "non_inferiority": {"metrics": []},
                           "base_model": {"score": False}}  # fmt: skip
    path = folder / "chat.yaml"
    path.write_text(yaml.safe_dump(config))
    state = finetune(config_path=str(path), return_state=True)
    assert state.is_completed(), state.message
    return state.result()["registered"].rsplit(" v", 1)[1]


@pytest.mark.usefixtures("llama_mirrored")
def test_generative_challenger_promoted_and_degenerate_one_rolled_back_on_quality(home, tmp_path):
    mlc = client(home.tracking_uri)
    policy = tmp_path / "canary.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    champion = train(tmp_path / "v1", seed=42)
    assert mlc.get_registered_model(NAME).aliases["champion"] == int(champion)

    # A second good version: promoted through both steps on ROUGE-L agreement.
    better = train(tmp_path / "v2", seed=7, epochs=12)
    decision = promotion(model_name=NAME, policy_path=str(policy))
    assert decision.action == "promote", decision.reason
    assert mlc.get_registered_model(NAME).aliases["champion"] == int(better)
    steps = [read_record(mlc, r.run_id)["details"]
             for r in history(mlc, NAME, better, kind="canary-step")]  # fmt: skip
    assert [s["outcome"] for s in steps] == ["continue", "promote"]
    first = steps[0]
    checks = {c["name"]: c for c in first["checks"]}
    assert checks["agreement_rouge_l"]["verdict"] == "pass"
    assert checks["agreement_rouge_l"]["figure"] >= 0.35
    assert first["replay"]["failed"] == 0 and first["replay"]["feedback"] >= 16
    assert first["challenger"]["online_rouge_l"] >= 0.5  # reference answers, posted by replay

    # A degenerate version (answers "meh" to everything) passes its relaxed gates, and the
    # canary rolls it back on quality: it no longer agrees with the champion.
    degenerate = train(tmp_path / "v3", seed=3, answer=lambda _: "meh")
    with pytest.raises(CanaryRolledBack, match=r"step 1 \(50 %\): .*agreement_rouge_l = 0"):
        promotion(model_name=NAME, policy_path=str(policy))
    assert mlc.get_registered_model(NAME).aliases["champion"] == int(better)
    tags = mlc.get_model_version(NAME, degenerate).tags
    assert tags["canary.outcome"] == "rollback"
    assert tags["canary.failed_check"] == "agreement_rouge_l"
    figures = json.loads(tags["canary.figures"])
    assert figures["agreement"] < 0.2 and figures["challenger"]["online_accuracy"] < 0.2
    (outcome,) = history(mlc, NAME, degenerate, kind="canary-outcome")
    assert outcome.outcome == "rollback" and "agreement_rouge_l" in outcome.reason
