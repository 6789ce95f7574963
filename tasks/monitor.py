"""The monitor's stages: observe (read reference, live window, age; judge), record, emit.

Thin wrappers over ``tasks/core/monitoring``: reads are retried (MLflow, the service); the
record is keyed by the flow run so a retry finds it; each breach emits its event once per run
with the evidence in the payload, and the deployment triggers (``loraflow deploy``) turn
``loraflow.drift.detected`` / ``loraflow.model.stale`` into a forced retraining run.
"""

from __future__ import annotations

from logging import INFO, WARNING

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import IO_RETRIES, log_decision, retry_when_it_can_help
from tasks.core.config.monitoring import MonitoringPolicy
from tasks.core.home import Home
from tasks.core.monitoring import sources
from tasks.core.monitoring.drift import MonitorReport, monitor
from tasks.core.ops.stack import EVENTS, model_resource
from tasks.core.tracking import client

OPTIONS = {**IO_RETRIES, "retry_condition_fn": retry_when_it_can_help}


@task(name="observe", task_run_name="observe {model_name}", timeout_seconds=300, **OPTIONS)
def observe(
    model_name: str, version: str | None, service_url: str, policy: MonitoringPolicy, home: Home
) -> MonitorReport:
    """Every finding of the version under watch against its reference profile."""
    mlc = client(home.tracking_uri)
    model_version = sources.version_under_watch(mlc, model_name, version)
    version = str(model_version.version)
    reference = sources.reference_of(mlc, model_version)
    live, feedback = sources.live_window(service_url, version)
    days = sources.days_since_validation(mlc, model_version)
    report = monitor(model_name, version, reference, live, feedback, days, policy)
    level = WARNING if report.breaches else INFO
    lines = "".join(f"\n{f.line()}" for f in report.findings)
    log_decision("monitor", f"{model_name} v{version}: {report.outcome}{lines}", level)
    return report


@task(name="record-monitor", timeout_seconds=120, **OPTIONS)
def record_monitor(report: MonitorReport, actor: str, key: str, home: Home) -> str:
    """The report as a decision record on the version, and as this run's artifact."""
    record_id = sources.record_report(client(home.tracking_uri), report, actor, key)
    create_markdown_artifact(
        key="monitor-report",
        markdown=report.to_markdown() + f"\n\nDecision record: `{record_id}`",
        description=f"Monitor of {report.model} v{report.version}",
    )
    return record_id


@task(name="emit-events", timeout_seconds=60, **OPTIONS)
def emit_breach_events(report: MonitorReport, record_id: str) -> list[str]:
    """One event per kind of breach, on the registered model's resource; their ids."""
    from prefect.events import emit_event

    emitted = []
    for kind in report.events():
        event = emit_event(
            event=EVENTS[kind],
            resource={"prefect.resource.id": model_resource(report.model)},
            payload=sources.event_payload(report, record_id, kind),
        )
        if event is not None:
            emitted.append(str(event.id))
        log_decision("monitor", f"emitted {EVENTS[kind]} for {report.model} v{report.version}")
    return emitted
