"""Data validation in the real flows: the report in Prefect and MLflow, and a failing check that
stops the pipeline before training with nothing written to the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)

from flows.finetune import finetune
from flows.validate_data import validate_data_only
from tasks.core.errors import DataValidationFailed
from tasks.core.tracking import client
from tests.flows.conftest import TINY_REPO, settled_task_runs, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def prefect_view(state) -> tuple[set[str], dict[str, str]]:
    """({task name}, {artifact key: data}) of the flow run behind ``state``."""
    flow_run_id = state.state_details.flow_run_id
    runs = settled_task_runs(flow_run_id)
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {r.name.split(" ", 1)[0] for r in runs}, {a.key: a.data for a in artifacts}


def add_leak(config) -> None:
    """Copy train's data row 7 into the dev file as its data row 17."""
    folder = config.parent
    leaked = (folder / "train.tsv").read_text().splitlines()[7]
    with (folder / "dev.tsv").open("a") as handle:
        handle.write(leaked + "\n")


def test_validate_only_flow_reports_with_the_audited_models_tokenizer(home, mirrored, tmp_path):
    config = write_config(tmp_path)
    state = validate_data_only(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report.verdict == "pass" and len(report.fingerprint) == 64
    assert report.tokenizer == f"{TINY_REPO}@{mirrored}" and report.max_length == 16
    tasks, artifacts = prefect_view(state)
    assert tasks == {"discover", "audit", "validate"}
    table = json.loads(artifacts["data-validation"])
    assert len(table) == len(report.checks) and len(table) == 21
    lengths = [row for row in table if row["check"] == "token_lengths"]
    assert [row["split"] for row in lengths] == ["train", "eval"]
    assert set(table[0]) == {
        "check",
        "split",
        "figure",
        "threshold",
        "verdict",
        "examples",
        "detail",
    }
    assert client(home.tracking_uri).search_registered_models() == []


def test_failing_check_stops_before_training_and_registers_nothing(home, mirrored, tmp_path):
    mlc = client(home.tracking_uri)
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = write_config(tmp_path / "good", in_process=True)
    state = finetune(config_path=str(good), return_state=True)
    assert state.is_completed(), state.message
    run_id = state.result()["run_id"]
    logged = {a.path for a in mlc.list_artifacts(run_id, "data")}
    assert logged == {"data/validation.json", "data/validation.html"}
    page = Path(mlc.download_artifacts(run_id, "data/validation.html", str(tmp_path))).read_text()
    assert "token_lengths" in page and "leakage" in page
    assert [int(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")] == [1]

    bad = write_config(tmp_path / "bad")
    add_leak(bad)
    state = finetune(config_path=str(bad), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationFailed) as failure:
        state.result()
    message = str(failure.value)
    assert message.startswith("data validation failed: leakage [eval]: 1 of 17 eval rows")
    assert message.endswith("(eval row 17 = train row 7) (rows 17)")
    assert failure.value.report.failed[0].examples == (17,)
    tasks, artifacts = prefect_view(state)
    assert "validate" in tasks and "fine-tune" not in tasks
    rows = {(r["check"], r["split"]): r for r in json.loads(artifacts["data-validation"])}
    assert (
        rows["leakage", "eval"]["verdict"] == "fail" and rows["leakage", "eval"]["examples"] == "17"
    )
    # Nothing new in the registry, and no training run.
    assert len(mlc.search_model_versions("name = 'tiny-lora'")) == 1
    assert [m.name for m in mlc.search_registered_models()] == ["tiny-lora"]
    experiment = mlc.get_experiment_by_name("tests").experiment_id
    trained = [r for r in mlc.search_runs([experiment]) if "lora.r" in r.data.params]
    assert [r.info.run_id for r in trained] == [run_id]


def test_a_cached_result_pickled_by_the_previous_layout_is_recomputed(home, mirrored, tmp_path):
    """Results cached before the regroup name classes by their old paths (``tasks.core.data``
    was a module): the re-run must recompute that stage, never crash on the old pickle."""
    import base64

    from prefect.settings import get_current_settings

    config = write_config(tmp_path)
    first = validate_data_only(config_path=str(config), return_state=True)
    assert first.is_completed(), first.message
    storage = Path(get_current_settings().results.local_storage_path)
    new, old = b"tasks.core.data.report", b"tasks.core.data_report"  # same length: valid pickle
    rewritten = 0
    for path in storage.rglob("*"):
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
            payload = base64.b64decode(record["result"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if new in payload:
            record["result"] = base64.b64encode(payload.replace(new, old)).decode()
            path.write_text(json.dumps(record))
            rewritten += 1
    assert rewritten >= 1  # the validate-data result, as the old layout would have pickled it

    again = validate_data_only(config_path=str(config), return_state=True)
    assert again.is_completed(), again.message
    report = again.result()
    assert type(report).__module__ == "tasks.core.data.report"
    assert report.fingerprint == first.result().fingerprint
