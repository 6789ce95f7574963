"""Registry I/O of a canary: the traffic lease, the outcome on the version, manual rollback.

The registry is where a running service learns what to serve (aliases, and the challenger's
share as a lease on the registered model, ``lease.py``), so every decision of the canary is a
registry write: a promotion moves ``champion`` and keeps the old one as ``previous-champion``;
a rollback removes ``challenger``; an abort ends the lease at 0 %. The version's tags are the
index of its latest outcome; the decision itself is a record of the history, written by the
caller. Decisions are made by the pure ``tasks.core.promotion.canary`` and ``.decision``.
"""

from __future__ import annotations

import contextlib
import json
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.errors import RollbackImpossible
from tasks.core.promotion.lease import LEASE_TAG, LEGACY_WEIGHT_TAG, Lease, decode, ended
from tasks.core.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    alias_version,
    delete_alias,
)

MAX_TAG_CHARS = 5000  # MLflow keeps version tag values in a VARCHAR(5000)


def read_lease(mlc: MlflowClient, name: str) -> Lease | None:
    try:
        tags = mlc.get_registered_model(name).tags or {}
    except MlflowException:
        return None
    return decode(tags.get(LEASE_TAG))


def write_lease(mlc: MlflowClient, name: str, lease: Lease) -> None:
    mlc.set_registered_model_tag(name, LEASE_TAG, lease.encode())


def end_lease(mlc: MlflowClient, name: str, why: str, holder: str = "", version: str = "") -> None:
    """0 % to the challenger, saying why, until a new canary grants a new lease."""
    write_lease(mlc, name, ended(read_lease(mlc, name), why, holder, version))
    _drop_legacy(mlc, name)


def clear_lease(mlc: MlflowClient, name: str) -> None:
    """No canary: hand the challenger's share back to the service's configured default."""
    for tag in (LEASE_TAG, LEGACY_WEIGHT_TAG):
        with contextlib.suppress(MlflowException):
            mlc.delete_registered_model_tag(name, tag)


def _drop_legacy(mlc: MlflowClient, name: str) -> None:
    """The bare percent tag of loraflow before leases (an orphan never expires)."""
    with contextlib.suppress(MlflowException):
        mlc.delete_registered_model_tag(name, LEGACY_WEIGHT_TAG)


def rolled_back_reason(mlc: MlflowClient, name: str, version: str) -> str:
    """Why a canary rolled this version back, or '' when none did."""
    tags = mlc.get_model_version(name, version).tags
    return tags.get("canary.failure", "") if tags.get("canary.outcome") == "rollback" else ""


def _tag(mlc: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlc.set_model_version_tag(name, version, key, str(value)[:MAX_TAG_CHARS])


def apply_promote(
    mlc: MlflowClient, name: str, candidate: str, reason: str, when: str, run_id: str
) -> str | None:
    """Move ``champion`` to ``candidate``, keep the old one as ``previous-champion``."""
    previous = alias_version(mlc, name, CHAMPION)
    if previous is not None and previous != candidate:
        mlc.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    mlc.set_registered_model_alias(name, CHAMPION, candidate)
    clear_lease(mlc, name)
    _tag(
        mlc,
        name,
        candidate,
        {
            "promotion.action": "promote",
            "promotion.reason": reason,
            "promotion.at": when,
            "canary.outcome": "promote",
            "canary.run_id": run_id,
        },
    )
    return previous


def apply_rollback(
    mlc: MlflowClient,
    name: str,
    candidate: str,
    failed_check: str,
    reason: str,
    figures: dict,
    when: str,
    run_id: str,
) -> None:
    """``challenger`` removed (if it still names this version), no lease, reason on the version."""
    if alias_version(mlc, name, CHALLENGER) == candidate:
        delete_alias(mlc, name, CHALLENGER)
    clear_lease(mlc, name)
    _tag(
        mlc,
        name,
        candidate,
        {
            "promotion.action": "rollback",
            "promotion.reason": reason,
            "promotion.at": when,
            "canary.outcome": "rollback",
            "canary.failed_check": failed_check,
            "canary.failure": reason,
            "canary.figures": json.dumps(figures, sort_keys=True, default=str),
            "canary.run_id": run_id,
        },
    )


def apply_abort(mlc: MlflowClient, name: str, candidate: str, error: str, when: str) -> None:
    """The canary itself broke or was stopped (not the model): 0 % to the challenger, kept."""
    end_lease(mlc, name, f"aborted: {error}"[:500], version=candidate)
    _tag(
        mlc,
        name,
        candidate,
        {"canary.outcome": "aborted", "canary.error": error, "canary.at": when},
    )


def manual_rollback(mlc: MlflowClient, name: str, reason: str, when: str) -> tuple[str, str | None]:
    """Restore ``previous-champion`` as ``champion``; return (restored, demoted)."""
    restored = alias_version(mlc, name, PREVIOUS_CHAMPION)
    if restored is None:
        raise RollbackImpossible(
            f"{name}: no '{PREVIOUS_CHAMPION}' alias to restore (set by a canary promotion)"
        )
    demoted = alias_version(mlc, name, CHAMPION)
    mlc.set_registered_model_alias(name, CHAMPION, restored)
    delete_alias(mlc, name, PREVIOUS_CHAMPION)
    if demoted is not None and alias_version(mlc, name, CHALLENGER) == demoted:
        delete_alias(mlc, name, CHALLENGER)  # a serving instance must not route to it again
    clear_lease(mlc, name)
    return restored, demoted


def abort_record(
    mlc: MlflowClient,
    name: str,
    version: str,
    why: str,
    actor: str,
    holder: str = "",
    key: str = "",
) -> str:
    """The abort of a canary as its own decision record (once per ``key``); its run id."""
    from tasks.core.registry.history import append_about_version

    return append_about_version(
        mlc, name, version, parent_run_id=holder or None, kind="canary-abort",
        outcome="aborted", reason=why, actor=actor, details={"canary_run_id": holder}, key=key,
    )  # fmt: skip


def expire_lease(
    mlc: MlflowClient, name: str, lease: Lease, actor: str, holder_dead: bool = False
) -> str | None:
    """A lease that expired (or whose holder is known dead): end it at 0 % and record why,
    once, whoever sees it first (a serving replica, a reconciler).

    Nothing is written when the stored lease is no longer this one (renewed, ended, replaced):
    only the holder's silence past ``expires_at``, or its known death, ends it.
    """
    stored = read_lease(mlc, name)
    if stored is None or stored.id != lease.id or stored.ended:
        return None
    ago = time.time() - stored.expires_at
    if ago < 0 and not holder_dead:
        return None  # renewed since it was read
    why = (
        f"the canary lease of v{stored.version} ({stored.percent:g} % at step {stored.step}, "
        f"held by canary run {stored.holder}) "
        + (f"expired {ago:.0f} s ago" if ago >= 0 else "lost its holder")
        + ": the promotion flow stopped renewing it; traffic returned to the champion"
    )
    end_lease(mlc, name, f"expired: {why}"[:500])
    _tag(mlc, name, stored.version, {"canary.outcome": "aborted", "canary.error": why})
    return abort_record(mlc, name, stored.version, why, actor, stored.holder, f"lease:{stored.id}")
