"""Registry I/O of a canary: the traffic weight, the outcome on the version, manual rollback.

The registry is where a running service learns what to serve (aliases, and the challenger's
share as a tag on the registered model), so every decision of the canary is a registry write:
a promotion moves ``champion`` and keeps the old one as ``previous-champion``; a rollback sets
the weight to 0, removes ``challenger`` and tags the version with the failing check and its
figures. Decisions themselves are made by the pure ``tasks.core.promotion.canary`` and
``tasks.core.promotion.decision``.
"""

from __future__ import annotations

import contextlib
import json

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.errors import RollbackImpossible
from tasks.core.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    alias_version,
    delete_alias,
)
from tasks.core.serving.models import WEIGHT_TAG

MAX_TAG_CHARS = 5000  # MLflow keeps version tag values in a VARCHAR(5000)


def set_weight(mlc: MlflowClient, name: str, percent: float) -> None:
    mlc.set_registered_model_tag(name, WEIGHT_TAG, f"{percent:g}")


def clear_weight(mlc: MlflowClient, name: str) -> None:
    """Hand the challenger's share back to the service's configured default."""
    with contextlib.suppress(MlflowException):
        mlc.delete_registered_model_tag(name, WEIGHT_TAG)


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
    clear_weight(mlc, name)
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
    """Weight 0, ``challenger`` removed (if it still names this version), reason on the version."""
    set_weight(mlc, name, 0)
    if alias_version(mlc, name, CHALLENGER) == candidate:
        delete_alias(mlc, name, CHALLENGER)
    clear_weight(mlc, name)
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
    """The canary itself broke (not the model): stop routing to the challenger, keep it."""
    set_weight(mlc, name, 0)
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
    clear_weight(mlc, name)
    if demoted is not None and demoted != restored:
        _tag(
            mlc,
            name,
            demoted,
            {
                "promotion.action": "rolled-back-by-hand",
                "promotion.reason": reason,
                "promotion.at": when,
            },
        )
    return restored, demoted
