"""Content digests: how cache keys, lineage and the mirror name a file's bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
