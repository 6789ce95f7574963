"""What every Prefect task wrapper shares: retry policy, cache keys, deterministic errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core.config_loader import ConfigError
from tasks.core.data import DataError
from tasks.core.discovery import DiscoveryError
from tasks.core.errors import Refusal
from tasks.core.mirror import MirrorError

# Errors that a retry cannot fix: fail at once instead of waiting out the retry delays.
DETERMINISTIC = (Refusal, ConfigError, DataError, DiscoveryError, MirrorError)
IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


def retry_unless_deterministic(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry I/O trouble, never a refusal or bad input."""
    try:
        state.result()
    except DETERMINISTIC:
        return False
    except Exception:
        return True
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stage_options(**extra: Any) -> dict[str, Any]:
    """Options of a retried, cached stage (results persisted so a re-run can reuse them)."""
    return {
        **IO_RETRIES,
        "retry_condition_fn": retry_unless_deterministic,
        "persist_result": True,
        **extra,
    }
