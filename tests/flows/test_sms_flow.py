"""The SMS-like scenario of issue 14 as one flow run with the tiny BERT: one headerless file
with string labels, ``data.split``, ``dedupe``, ``label_map`` and PII redaction. The registered
model serves a raw phone number as it scored the redacted text in evaluation, and the run's
records say why at every stage (Prefect logs, MLflow datasets, a clean card)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from flows.finetune import finetune
from tasks.core.tracking import client
from tests.flows.conftest import TINY_REPO, write_config
from tests.sms import write_sms

pytestmark = pytest.mark.usefixtures("prefect_harness")
MODEL = "sms-lora"


def sms_config(folder):
    data = write_sms(folder / "SMSSpamCollection", count=240, duplicates=14)
    return write_config(
        folder,
        in_process=True,
        name="sms-test",
        data={
            "name": "sms",
            "license": "cc-by-4.0",
            "labels": ["legit", "spam"],
            "label_map": {"ham": "legit"},
            "train": {
                "path": str(data),
                "format": "tsv",
                "header": False,
                "column_names": ["label", "text"],
                "text_column": "text",
                "label_column": "label",
            },
            "split": {"eval_fraction": 0.25, "seed": 1},
            "dedupe": "exact",
            "pii": {"policy": "redact"},
            "checks": {"class_balance": "off"},
        },  # fmt: skip
        gates={"absolute": {"accuracy": 0.0, "recall_spam": 0.0, "f1_legit": 0.0}},
        registry={"model_name": MODEL, "experiment": "tests"},
    )


def flow_logs(flow_run_id) -> list[str]:
    """The flow run's log as the UI's Logs tab shows it (sent in the background: flushed)."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


def test_sms_scenario_serves_what_was_evaluated(home, mirrored, tmp_path):
    state = finetune(config_path=str(sms_config(tmp_path)), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    mlc = client(home.tracking_uri)
    run = mlc.get_run(summary["run_id"])

    # Data: split from one file, repeats dropped and counted, PII redacted, classes mapped.
    report = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/data/validation.json")
    checks = {(c["check"], c["split"]): c for c in report["checks"]}
    assert checks[("dedupe", "train")]["figure"] + checks[("dedupe", "eval")]["figure"] > 0
    assert checks[("split", "eval")]["verdict"] == "pass"
    assert checks[("leakage", "eval")]["figure"] == 0
    assert checks[("pii", "train")]["stats"]["redacted"] is True
    assert report["preprocessing"]["redact"] and "GB" in report["preprocessing"]["phone_regions"]
    evaluation = mlc.get_run(summary["evaluation_record"]).data.metrics
    assert "eval_f1_spam" in evaluation and "eval_recall_spam" in evaluation
    assert any(
        line.startswith("recall_spam") or "min_recall_spam" in line for line in summary["gates"]
    )

    # The registered model redacts what it is sent, as the eval split was redacted.
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    texts = [
        "good film call 07712345678",
        "good film call [PHONE]",
        "GOOD film ring +44 7700 900123",
    ]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert out["label"].nunique() == 1 and out["score"].nunique() == 1, out
    assert set(out["label"]) <= {"legit", "spam"}

    # MLflow: datasets recorded with name, digest and source; the card is clean.
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"sms-train", "sms-eval"}
    assert inputs["sms-train"].dataset.digest == report["digests"]["train"][:32]
    assert "SMSSpamCollection" in inputs["sms-eval"].dataset.source
    version = mlc.get_model_version(MODEL, "1")
    assert not version.description.startswith("---") and "## Input preprocessing" in (
        version.description
    )
    assert "redact email" in version.description
    files = {a.path for a in mlc.list_artifacts(run.info.run_id, "model/artifacts/adapter")}
    assert files and not any(f.endswith("README.md") for f in files), files  # no PEFT template
    tags = run.data.tags
    assert tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert "Prefect flow run" in tags["mlflow.note.content"]

    # Prefect: each stage logged its decision to the flow run's log.
    logs = "\n".join(flow_logs(state.state_details.flow_run_id))
    for decision in (
        f"discover: pinned model {TINY_REPO}@",
        "audit: allow ",
        "validate: pass",
        f"fine-tune: MLflow run {run.info.run_id}",
        "evaluate: candidate ",
        "gates: pass (",
        "min_recall_spam ",
        f"register: {MODEL} v1 (new)",
        "served with preprocessing: strip; redact",
        "promote: promote v1: no champion yet",
    ):
        assert decision in logs, f"{decision!r} not in the flow run log:\n{logs}"
