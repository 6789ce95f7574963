"""Rollback by hand: end a live canary, or give the champion alias back to the previous one.

Both are decisions like any other: each is a record of the decision history naming who
asked and why (the version tags only index it), so a later promotion of the same version
does not erase it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from tasks.core.promotion.canary_io import (
    abort_record,
    apply_abort,
    manual_rollback,
    read_lease,
)
from tasks.core.registry.history import append_about_version


def abort_live_canary(mlc: MlflowClient, name: str, reason: str, actor: str) -> str | None:
    """End the canary whose lease is still in force (active or expired, not ended); its
    challenger version, or None when no canary is live. A running promotion flow sees the
    ended lease at its next renewal and stops."""
    lease = read_lease(mlc, name)
    if lease is None or lease.ended:
        return None
    why = f"ended by hand: {reason}"
    apply_abort(mlc, name, lease.version, why, _now())
    abort_record(mlc, name, lease.version, why, actor, lease.holder)
    return lease.version


def rollback_champion(mlc: MlflowClient, name: str, reason: str, actor: str) -> tuple[str, str]:
    """Restore ``previous-champion``; record the rollback on the demoted version (and the
    restoration on the restored one). (restored, demoted)."""
    restored, demoted = manual_rollback(mlc, name, reason, _now())
    for version, kind, outcome, what in (
        (demoted, "rollback", "rolled back", f"v{demoted} demoted, v{restored} champion again"),
        (restored, "promotion", "restored", f"v{restored} champion again, v{demoted} demoted"),
    ):
        if version is None:
            continue
        why = f"{reason} ({what})"
        record = append_about_version(
            mlc, name, version, kind=kind, outcome=outcome, reason=why, actor=actor,
            details={"restored": restored, "demoted": demoted},
        )  # fmt: skip
        index = {
            "promotion.action": outcome,
            "promotion.reason": why,
            "promotion.at": _now(),
            "promotion.by": actor,
            "promotion.record": record,
        }
        for tag, value in index.items():
            mlc.set_model_version_tag(name, version, tag, value)
    return restored, demoted


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
