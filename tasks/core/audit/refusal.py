"""MLflow record of an audit refusal: one FAILED run holding the whole verdict.

An allowed audit travels into the training run (the pipeline's one MLflow run). A refusal has
no training run to travel into, yet a reviewer must find it where every other decision is:
so it gets a run of its own, tagged ``loraflow.run_type=audit-refusal``, with the verdict and
reasons as tags and the full record (every candidate's reasons, policy hash, card excerpt,
weight hashes) as ``audit/license.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlflow.tracking import MlflowClient

from tasks.core.audit.licenses import AuditRecord, to_markdown

RUN_TYPE_TAG = "loraflow.run_type"
REFUSAL_RUN_TYPE = "audit-refusal"
MAX_TAG_CHARS = 5000  # MLflow allows 8000; keep room for multi-byte characters


def refusal_payload(records: Sequence[AuditRecord]) -> dict:
    """The JSON a reviewer reads: the overall verdict, every reason, each candidate's record."""
    first = records[0]
    return {
        "verdict": "deny",
        "policy_version": first.policy_version,
        "policy_sha256": first.policy_sha256,
        "intended_use": first.intended_use,
        "reasons": [reason for record in records for reason in record.denials],
        "candidates_audited": [record.model for record in records],
        "records": [record.to_dict() for record in records],
    }


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 1] + "…"


def log_refusal(
    mlc: MlflowClient,
    experiment_id: str,
    records: Sequence[AuditRecord],
    table: list[dict],
    tags: dict[str, str],
    run_name: str,
    resolved_config: str | None = None,
) -> str:
    """Create the refusal run (status FAILED) and return its id."""
    payload = refusal_payload(records)
    run_tags = {
        **tags,
        RUN_TYPE_TAG: REFUSAL_RUN_TYPE,
        "license_verdict": "deny",
        "audit.reasons": _clip("\n".join(payload["reasons"])),
        "audit.candidates": _clip(", ".join(payload["candidates_audited"])),
        "license_policy_version": payload["policy_version"],
        "license_policy_sha256": payload["policy_sha256"],
        "mlflow.note.content": _clip(
            "License / supply-chain audit refused every candidate:\n\n"
            + "\n".join(f"- {r}" for r in payload["reasons"])
        ),
    }
    run = mlc.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        mlc.log_dict(run_id, payload, "audit/license.json")
        mlc.log_dict(run_id, {"candidates": table}, "discovery/candidates.json")
        mlc.log_text(run_id, "\n\n".join(map(to_markdown, records)), "audit/license.md")
        if resolved_config:
            mlc.log_text(run_id, resolved_config, "config/resolved.yaml")
    finally:
        mlc.set_terminated(run_id, "FAILED")
    return run_id
