"""Which model types transformers has a head for, per task, without importing transformers.

Discovery rejects a candidate whose architecture has no head for the experiment's task, and
transformers keeps that table in its auto-model mappings. Importing them costs ~2.4 s of CPU
(transformers' model registry and torch) at every ``loraflow run``, before the flow starts;
the table only changes with the installed transformers. ``heads.json`` holds it for one
version; any other version reads transformers itself (correct, only slower).

    .venv/bin/python -m tasks.core.catalog.heads   # rewrite heads.json after a transformers bump
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("heads.json")
MAPPINGS = {"text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"}


def installed_version() -> str:
    try:
        return version("transformers")
    except PackageNotFoundError:
        return ""


def from_transformers() -> dict[str, list[str]]:
    """The table read from the installed transformers (the slow way)."""
    from transformers.models.auto import modeling_auto

    return {task: sorted(getattr(modeling_auto, name)) for task, name in MAPPINGS.items()}


def task_heads() -> dict[str, frozenset[str]]:
    """{task: model types with a head for it} of the installed transformers."""
    table = None
    if SNAPSHOT.is_file():
        snapshot = json.loads(SNAPSHOT.read_text())
        if snapshot.get("transformers") == installed_version():
            table = snapshot["heads"]
    if table is None or set(table) != set(MAPPINGS):
        table = from_transformers()
    return {task: frozenset(types) for task, types in table.items()}


def write_snapshot(path: Path = SNAPSHOT) -> None:
    snapshot = {"transformers": installed_version(), "heads": from_transformers()}
    path.write_text(json.dumps(snapshot, indent=1) + "\n")


if __name__ == "__main__":
    write_snapshot()
    print(f"wrote {SNAPSHOT} for transformers {installed_version()}")
