"""Must-pass examples (``gates.golden``): read and checked without loading any model.

The file is read by the preflight check (before training, so a bad line or an unknown class
fails in seconds) and again by the evaluation, which scores the cases.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.errors import ConfigError


def _class_name(label, labels: list[str]) -> str | None:
    if isinstance(label, str) and label.strip() in labels:
        return label.strip()
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
        return labels[label]
    return None


def read_golden(path: Path, labels: list[str]) -> list[tuple[int, str, str]]:
    """(line, text, expected class name) per JSONL line; a bad line is a config error."""
    cases = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            text, label = row["text"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f'{path}: line {number}: expected {{"text": ..., "label": ...}} ({exc})'
            ) from None
        name = _class_name(label, labels)
        if name is None or not isinstance(text, str) or not text.strip():
            raise ConfigError(
                f"{path}: line {number}: label {label!r} is not one of {labels} or ids "
                f"0..{len(labels) - 1}, or the text is empty"
            )
        cases.append((number, text, name))
    if not cases:
        raise ConfigError(f"{path}: no golden cases")
    return cases
