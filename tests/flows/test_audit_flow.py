"""The audit stage in the real flow: a refusal is visible in Prefect and MLflow and stops the
pipeline before data or training; with discovery, a denied candidate is skipped for the next."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)

from flows.finetune import finetune
from tasks.core.audit.refusal import REFUSAL_RUN_TYPE, RUN_TYPE_TAG
from tasks.core.catalog.mirror import import_folder
from tasks.core.errors import LicenseDenied
from tasks.core.tracking import client
from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO, settled_task_runs, write_config
from tests.tiny import build_tiny_bert
from tests.unit.license_zoo import _remote_code

pytestmark = pytest.mark.usefixtures("prefect_harness")
POLICY = REPO / "configs/policies/licenses.yaml"


def prefect_view(state) -> tuple[dict[str, object], dict[str, str]]:
    """({task name: task run}, {artifact key: markdown or table}) of the flow run."""
    flow_run_id = state.state_details.flow_run_id
    runs = settled_task_runs(flow_run_id)
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {r.name.split(" ", 1)[0]: r for r in runs}, {a.key: a.data for a in artifacts}


def artifact_json(mlc, run_id: str, path: str, tmp_path) -> dict:
    local = mlc.download_artifacts(run_id, path, str(tmp_path))
    return json.loads(Path(local).read_text())


def test_denied_only_candidate_fails_with_the_reason_in_prefect_and_mlflow(home, tmp_path):
    nc = build_tiny_bert(tmp_path / "nc-bert", license="cc-by-nc-4.0")
    sha = import_folder(nc, TINY_REPO, home.hf_hub_cache).revision
    reason = f"model:{TINY_REPO}@{sha}: CC-BY-NC-4.0 (non-commercial) is on the deny list"

    state = finetune(config_path=str(write_config(tmp_path)), return_state=True)

    assert state.is_failed()
    with pytest.raises(LicenseDenied) as info:
        state.result()
    assert reason in str(info.value)

    # Prefect: the audit task failed with the reason; the stages after it never ran.
    tasks, artifacts = prefect_view(state)
    assert set(tasks) == {"discover", "audit"}
    assert tasks["discover"].state.name == "Completed"
    assert tasks["audit"].state.name == "Failed"
    assert reason in tasks["audit"].state.message
    assert reason.split(": ", 1)[1] in artifacts["license-audit"]
    assert "Refused: every candidate denied" in artifacts["license-audit"]
    assert json.loads(artifacts["discovery"])[0]["model"] == TINY_REPO

    # MLflow: one FAILED refusal run, no training run, nothing registered.
    mlc = client(home.tracking_uri)
    (run,) = mlc.search_runs([mlc.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags[RUN_TYPE_TAG] == REFUSAL_RUN_TYPE and tags["license_verdict"] == "deny"
    assert tags["audit.reasons"] == reason
    assert tags["loraflow.experiment"] == "tiny-test"
    assert tags["license_policy_sha256"] == hashlib.sha256(POLICY.read_bytes()).hexdigest()
    assert run.info.run_id in str(info.value)
    record = artifact_json(mlc, run.info.run_id, "audit/license.json", tmp_path)
    assert record["verdict"] == "deny" and record["reasons"] == [reason]
    assert record["policy_sha256"] == tags["license_policy_sha256"]
    (audited,) = record["records"]
    assert audited["model"] == f"{TINY_REPO}@{sha}"
    assert audited["card_excerpt"].startswith("---\nlicense: cc-by-nc-4.0")
    assert len(audited["file_hashes"]["model.safetensors"]) == 64
    assert [c["check"] for c in audited["checks"]] == [
        "weights",
        "integrity",
        "remote-code",
        "secrets",
    ]
    table = artifact_json(mlc, run.info.run_id, "discovery/candidates.json", tmp_path)
    assert table["candidates"][0]["revision"] == sha
    assert mlc.search_registered_models() == []


def test_discovery_skips_a_denied_candidate_and_trains_the_next(home, tmp_path):
    """Two equal candidates: the first (by id) ships custom code, so the second is trained."""
    clean = build_tiny_bert(tmp_path / "clean")
    custom = build_tiny_bert(tmp_path / "custom")
    _remote_code(custom)
    denied = import_folder(custom, "a-org/custom-code", home.hf_hub_cache).revision
    chosen = import_folder(clean, "b-org/clean", home.hf_hub_cache).revision
    config = write_config(tmp_path, in_process=True, discovery={"max_candidates": 5})

    state = finetune(config_path=str(config), return_state=True)

    assert state.is_completed(), state.message
    assert state.result()["model"] == f"b-org/clean@{chosen}"
    _, artifacts = prefect_view(state)
    assert f"Skipped `a-org/custom-code@{denied}`" in artifacts["license-audit"]
    ranked = [row["model"] for row in json.loads(artifacts["discovery"])]
    assert ranked == ["a-org/custom-code", "b-org/clean"]

    # An allowed audit makes no run of its own: its record travels into the training run.
    mlc = client(home.tracking_uri)
    (run,) = mlc.search_runs(
        [mlc.get_experiment_by_name("tests").experiment_id],
        filter_string="tags.`loraflow.run_type` = 'training'",
    )
    assert run.data.tags[RUN_TYPE_TAG] == "training" and run.data.tags["license_verdict"] == "allow"
    record = artifact_json(mlc, run.info.run_id, "audit/license.json", tmp_path)
    assert record["model"] == f"b-org/clean@{chosen}"
    (skipped,) = record["skipped"]
    assert skipped["model"] == f"a-org/custom-code@{denied}"
    assert "remote-code: custom code needs trust_remote_code" in skipped["reasons"][0]
    table = artifact_json(mlc, run.info.run_id, "discovery/candidates.json", tmp_path)
    assert table["chosen"] == f"b-org/clean@{chosen}"
    assert [row["model"] for row in table["candidates"]] == ranked
