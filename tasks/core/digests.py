"""Content digests: how cache keys, lineage and the mirror name things by their content."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
