"""Stage 2 - license and supply-chain audit: the first candidate the policy allows, or a refusal.

Candidates are audited in rank order; a denied one is skipped with its reasons and the next is
tried. When every candidate is denied, the refusal is recorded in MLflow (one FAILED run of
type ``audit-refusal`` in the registry experiment) and in Prefect (a markdown artifact and
this task failing with the reasons), and the flow stops before any data is loaded.
"""

from __future__ import annotations

from logging import WARNING
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.common import log_decision, stage_options
from tasks.core.audit.licenses import AuditRecord, DatasetLicense, audit, to_markdown
from tasks.core.audit.refusal import log_refusal
from tasks.core.audit.supply_chain import gather_facts
from tasks.core.catalog.base import Candidate
from tasks.core.catalog.choose import catalog_named
from tasks.core.config.audit import LicensePolicy, LicenseSpec
from tasks.core.digests import key
from tasks.core.discovery import Discovery
from tasks.core.errors import LicenseDenied
from tasks.core.home import Home
from tasks.core.tracking import client, ensure_experiment


def _cache_key(context, params) -> str:
    discovery: Discovery = params["discovery"]
    return key(
        "audit",
        discovery.source,
        discovery.refs,
        params["spec"],
        params["policy_sha256"],
        params["datasets"],
        params["home"].tracking_uri,  # a refusal is recorded in this store: never share it
    )


def record_refusal(
    records: list[AuditRecord],
    table: list[dict],
    experiment: str,
    home: Home,
    tags: dict[str, str],
) -> str:
    """Log the refusal run in MLflow; return its id."""
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, experiment, home.mlflow_artifacts)
    run_tags = {k: v for k, v in tags.items() if k != "resolved_config"}
    run_tags["prefect.flow_run_id"] = str(flow_run.get_id() or "")
    name = run_tags.get("loraflow.experiment", "audit")
    return log_refusal(
        mlc,
        experiment_id,
        records,
        table,
        run_tags,
        run_name=f"{name}-audit-refusal",
        resolved_config=tags.get("resolved_config"),
    )


@task(
    name="audit-licenses",
    task_run_name="audit {discovery.candidates[0].repo_id}",
    timeout_seconds=900,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def audit_licenses(
    discovery: Discovery,
    spec: LicenseSpec,
    policy: LicensePolicy,
    policy_sha256: str,
    datasets: tuple[DatasetLicense, ...],
    experiment: str,
    home: Home,
    tags: dict[str, str] | None = None,
) -> tuple[Candidate, AuditRecord]:
    """Raise LicenseDenied (no retry) when no candidate passes."""
    catalog = catalog_named(discovery.source, Path(home.hf_hub_cache))
    table = discovery.table()
    records: list[AuditRecord] = []
    for candidate in discovery.candidates:
        record = audit(
            candidate,
            gather_facts(catalog, candidate),
            datasets,
            policy,
            policy_sha256,
            spec.approvals,
            skipped=[{"model": r.model, "reasons": r.denials} for r in records],
            candidates=table,
        )
        if record.verdict == "allow":
            skipped = f"; skipped {', '.join(r.model for r in records)}" if records else ""
            log_decision(
                "audit",
                f"allow {candidate.ref} under license policy {policy.version}{skipped}"
                + "".join(f"\n{s.subject}: {s.license} - {s.decision}" for s in record.subjects),
            )
            create_markdown_artifact(
                key="license-audit",
                markdown=to_markdown(record),
                description=f"License and supply-chain verdict for {candidate.ref}",
            )
            return candidate, record
        records.append(record)

    run_id = record_refusal(records, table, experiment, home, tags or {})
    create_markdown_artifact(
        key="license-audit",
        markdown=(
            f"# Refused: every candidate denied\n\nMLflow run `{run_id}` in experiment "
            f"`{experiment}` (type audit-refusal) holds `audit/license.json`.\n\n"
            + "\n\n".join(map(to_markdown, records))
        ),
        description="License audit: every candidate denied",
    )
    reasons = "; ".join(reason for record in records for reason in record.denials)
    log_decision("audit", f"deny every candidate: {reasons} (MLflow run {run_id})", WARNING)
    raise LicenseDenied(f"license audit denied the run: {reasons} (MLflow run {run_id})")
