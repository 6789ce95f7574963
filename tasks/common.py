"""What every Prefect task wrapper shares: retry policy and cache keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core.errors import is_retryable

IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


def retry_when_it_can_help(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: the error's class says whether waiting can change it.

    A refusal or bad input fails at once instead of waiting out the retry delays; I/O trouble,
    a preempted or crashed training process and any unexpected error are retried.
    """
    try:
        state.result()
    except Exception as exc:
        return is_retryable(exc)
    return True


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    return value


def key(stage: str, *parts: Any) -> str:
    """A cache key from references: section contents, shas, run ids, never live objects."""
    payload = json.dumps([stage, *map(_plain, parts)], sort_keys=True, default=str)
    return f"loraflow-{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def stage_options(**extra: Any) -> dict[str, Any]:
    """Options of a retried, cached stage (results persisted so a re-run can reuse them)."""
    return {
        **IO_RETRIES,
        "retry_condition_fn": retry_when_it_can_help,
        "persist_result": True,
        **extra,
    }
