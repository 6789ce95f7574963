"""The MLflow refusal run, on a real SQLite store: one FAILED run holding every record."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.audit.licenses import DatasetLicense, audit
from tasks.core.audit.refusal import MAX_TAG_CHARS, REFUSAL_RUN_TYPE, RUN_TYPE_TAG, log_refusal
from tasks.core.catalog.base import Candidate
from tasks.core.config.audit import LicensePolicy
from tasks.core.tracking import client, ensure_experiment

POLICY = LicensePolicy(
    kind="license-policy", version="t-1", intended_use="commercial", allow=["mit"], deny=[]
)


def record(name: str, license: str | None, datasets=()):
    candidate = Candidate(f"acme/{name}", "a" * 40, "bert", license, None, None, 1, True, ())
    return audit(candidate, None, datasets, POLICY, "e" * 64, ())


def test_log_refusal_keeps_every_candidate_and_clips_tags(home, tmp_path):
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, "refusals", home.mlflow_artifacts)
    long_name = "x" * 6000
    records = [
        record("first", None),
        record("second", "gpl-3.0", [DatasetLicense(long_name, None)]),
    ]
    table = [{"rank": 1, "model": "acme/first"}, {"rank": 2, "model": "acme/second"}]

    run_id = log_refusal(
        mlc, experiment_id, records, table, {"config_sha256": "c" * 64}, "exp-audit-refusal"
    )

    run = mlc.get_run(run_id)
    assert (run.info.status, run.info.run_name) == ("FAILED", "exp-audit-refusal")
    tags = run.data.tags
    assert tags[RUN_TYPE_TAG] == REFUSAL_RUN_TYPE and tags["config_sha256"] == "c" * 64
    assert len(tags["audit.reasons"]) == MAX_TAG_CHARS and tags["audit.reasons"].endswith("…")
    assert tags["audit.candidates"] == f"acme/first@{'a' * 40}, acme/second@{'a' * 40}"
    local = mlc.download_artifacts(run_id, "audit/license.json", str(tmp_path))
    payload = json.loads(Path(local).read_text())
    assert payload["candidates_audited"] == [r.model for r in records]
    assert payload["reasons"] == [*records[0].denials, *records[1].denials]
    assert len(payload["reasons"]) == 3 and payload["policy_version"] == "t-1"
    assert [r["model"] for r in payload["records"]] == payload["candidates_audited"]
    files = {a.path for a in mlc.list_artifacts(run_id, "audit")}
    assert files == {"audit/license.json", "audit/license.md"}
    assert {a.path for a in mlc.list_artifacts(run_id, "discovery")} == {
        "discovery/candidates.json"
    }
