"""Where the monitor's inputs come from and where its report goes (MLflow, the service).

The version under watch (the champion unless one is named), its reference profile (an
artifact of its evaluation record), when it was validated (that record's time), the live window
(``GET /monitoring/window`` of a running service, with the feedback token when one is set), and the report as a ``monitor`` decision
record on the version: append-only, one per monitor run, read back by ``loraflow lineage``.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.errors import BadInput, ServiceUnavailable
from tasks.core.monitoring.drift import Feedback, MonitorReport
from tasks.core.monitoring.profile import ARTIFACT, ReferenceProfile, Stats
from tasks.core.registry.history import append_about_version
from tasks.core.registry.lineage import EVALUATION_TAG
from tasks.core.registry.versions import CHAMPION
from tasks.core.security.tokens import ServiceTokens


def version_under_watch(mlc: MlflowClient, name: str, version: str | None = None):
    """The named version, else the champion; BadInput naming what is missing."""
    try:
        if version is not None:
            return mlc.get_model_version(name, version)
        return mlc.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        what = f"version {version}" if version else "no champion alias"
        raise BadInput(
            f"registered model {name!r}: {what} (see `loraflow lineage {name}`)"
        ) from None


def reference_of(mlc: MlflowClient, model_version) -> ReferenceProfile | None:
    """The profile recorded with the version's evaluation (None: registered before profiles)."""
    record = model_version.tags.get(EVALUATION_TAG, "")
    if not record:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlc.download_artifacts(record, ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return ReferenceProfile.read(Path(local))


def days_since_validation(mlc: MlflowClient, model_version, now: datetime | None = None):
    """Days since the evaluation record that validated the version finished (else since the
    version was registered)."""
    now = now or datetime.now(UTC)
    stamp = None
    record = model_version.tags.get(EVALUATION_TAG, "")
    if record:
        try:
            run = mlc.get_run(record)
            stamp = run.info.end_time or run.info.start_time
        except MlflowException:
            stamp = None
    stamp = stamp or model_version.creation_timestamp
    if not stamp:
        return None
    return (now - datetime.fromtimestamp(stamp / 1000, UTC)).total_seconds() / 86400


def live_window(
    service_url: str, version: str, timeout: float = 10.0
) -> tuple[Stats | None, Feedback]:
    """The service's window of ``version`` (None and no feedback when it served none)."""
    url = f"{service_url.rstrip('/')}/monitoring/window"
    token = ServiceTokens.from_env().feedback  # an administrative endpoint, as /feedback
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.get(url, timeout=timeout, headers=headers)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"cannot read {url}: {exc}") from None
    found = answer.json().get("versions", {}).get(str(version))
    if not found:
        return None, Feedback(0, 0)
    stats = Stats.from_dict(found["stats"]) if found.get("stats") else None
    feedback = found.get("feedback") or {}
    return stats, Feedback(int(feedback.get("count", 0)), int(feedback.get("correct", 0)))


def record_report(mlc: MlflowClient, report: MonitorReport, actor: str, key: str) -> str:
    """The report as a ``monitor`` decision on the version; its record id."""
    return append_about_version(
        mlc,
        report.model,
        report.version,
        kind="monitor",
        outcome=report.outcome,
        reason=report.reason()[:4000],
        actor=actor,
        figures=report.figures(),
        details=report.to_dict(),
        key=key,
    )


def event_payload(report: MonitorReport, record_id: str, event: str) -> dict:
    """The evidence an emitted event carries: each breach that names it, and the record."""
    return {
        "model": report.model,
        "version": report.version,
        "record": record_id,
        "policy_version": report.policy_version,
        "live_inputs": report.live_count,
        "findings": [
            {"check": f.check, "figure": f.figure, "threshold": f.threshold, "detail": f.detail}
            for f in report.breaches
            if f.event == event
        ],
        "summary": json.dumps(report.reason())[:1000],
    }
