"""Stage 2 - license audit: the first candidate whose license (and the data's) the policy allows."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import key, stage_options
from tasks.core.config import LicensePolicy, LicenseSpec
from tasks.core.discovery import Candidate
from tasks.core.errors import LicenseDenied
from tasks.core.licenses import AuditRecord, audit, to_markdown


def _cache_key(context, params) -> str:
    return key(
        "audit",
        [c.ref for c in params["candidates"]],
        params["spec"],
        params["policy_sha256"],
        params["datasets"],
    )


@task(
    name="audit-licenses",
    task_run_name="audit {candidates[0].repo_id}",
    timeout_seconds=120,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def audit_licenses(
    candidates: list[Candidate],
    spec: LicenseSpec,
    policy: LicensePolicy,
    policy_sha256: str,
    datasets: dict[str, str | None],
) -> tuple[Candidate, AuditRecord]:
    """Raise LicenseDenied (no retry) when no candidate passes."""
    records = []
    for candidate in candidates:
        record = audit(
            f"model:{candidate.ref}",
            candidate.license,
            datasets,
            policy,
            policy_sha256,
            list(spec.approvals),
        )
        records.append(record)
        if record.verdict == "allow":
            create_markdown_artifact(
                key="license-audit",
                markdown=to_markdown(record),
                description=f"License verdict for {candidate.ref}",
            )
            return candidate, record
    create_markdown_artifact(
        key="license-audit",
        markdown="\n\n".join(map(to_markdown, records)),
        description="License audit: every candidate denied",
    )
    reasons = "; ".join(r for rec in records for r in rec.reasons if ": deny" in r)
    raise LicenseDenied(f"license audit denied the run: {reasons}")
