"""Small data files for the data-validation tests: written in any supported format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from tasks.core.config.data import DataSpec, SplitSpec

LABELS = ("negative", "positive")
# Train and eval share no text, not even once normalised: a clean pair passes every check.
TRAIN = [
    ("a dull , lifeless film", 0),
    ("warm and funny", 1),
    ("not worth the ticket", 0),
    ("a small gem", 1),
]
EVAL = [
    ("flat and tired", 0),
    ("a joy to watch", 1),
    ("badly acted", 0),
    ("smart and moving", 1),
]


def write_split(
    path: Path, rows: list[tuple], text: str = "text", label: str = "label", header: bool = True
) -> Path:
    """Write (text, label) rows in the format named by the suffix; columns: label, text."""
    fmt = path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tsv":
        lines = ([f"{label}\t{text}"] if header else []) + [f"{y}\t{x}" for x, y in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            if header:
                writer.writerow([label, text])
            writer.writerows([y, x] for x, y in rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({label: y, text: x}) + "\n" for x, y in rows))
    elif fmt == "json":
        path.write_text(json.dumps([{label: y, text: x} for x, y in rows]))
    elif fmt == "parquet":
        pd.DataFrame({label: [y for _, y in rows], text: [x for x, _ in rows]}).to_parquet(path)
    else:
        raise ValueError(fmt)
    return path


def spec_for(train: Path, eval: Path, *, labels=LABELS, seed=0, **sections) -> DataSpec:
    """A DataSpec over two files with columns text/label; ``sections``: checks, pii, ..."""
    split_options = {k: sections.pop(k) for k in ("max_samples",) if k in sections}
    return DataSpec(
        name="fixture",
        labels=labels,
        train=SplitSpec(path=train, text_column="text", label_column="label", **split_options),
        eval=SplitSpec(path=eval, text_column="text", label_column="label"),
        seed=seed,
        **sections,
    )


def fired(report) -> dict[tuple[str, str], str]:
    """{(check, split): verdict} of the checks that did not pass."""
    return {(c.check, c.split): c.verdict for c in report.checks if c.verdict != "pass"}
