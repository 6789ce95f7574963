"""Data loading, column/label mapping, basic validation checks and the dataset fingerprint.

Files load through ``datasets`` (csv / tsv / json / jsonl / parquet), each split on its own
because splits may name their columns differently. Every split is mapped to the same schema
(``text``: string, ``label``: ClassLabel with the configured names), checked, fingerprinted and
saved once under a content-addressed folder: later stages receive that path, never the data.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from tasks.core.config import DataSpec, SplitSpec

SPLITS = ("train", "eval")
MAX_EXAMPLES = 5
Severity = Literal["fail", "warn"]


class DataError(ValueError):
    """The data cannot be used: a file, split, column, row or label is wrong."""


@dataclass(frozen=True)
class CheckResult:
    check: str
    split: str
    figure: float
    threshold: str
    verdict: Literal["pass", "warn", "fail"]
    detail: str = ""
    examples: tuple[int, ...] = field(default_factory=tuple)  # 1-based data rows

    def line(self) -> str:
        rows = f" (rows {', '.join(map(str, self.examples))})" if self.examples else ""
        return f"{self.check} [{self.split}]: {self.detail}{rows}"


@dataclass(frozen=True)
class DataReport:
    fingerprint: str
    label_names: tuple[str, ...]
    rows: dict[str, int]
    checks: tuple[CheckResult, ...]
    prepared_path: str

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "fail"]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


def load_split(spec: SplitSpec) -> Dataset:
    fmt = spec.resolved_format
    kwargs: dict = {}
    if fmt in ("csv", "tsv"):
        builder = "csv"
        kwargs = {
            "delimiter": "\t" if fmt == "tsv" else ",",
            "quoting": csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        }
        kwargs["keep_default_na"] = False
    elif fmt in ("json", "jsonl"):
        builder = "json"
    else:
        builder = "parquet"
    try:
        return load_dataset(builder, data_files=str(spec.path), split="train", **kwargs)
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DataError(f"{spec.path}: cannot be read as {fmt}: {exc}") from exc


def check_schema(split: str, ds: Dataset, spec: SplitSpec) -> CheckResult:
    expected = [spec.text_column, spec.label_column]
    missing = [c for c in expected if c not in ds.column_names]
    if missing:
        return CheckResult(
            "schema",
            split,
            len(missing),
            "0 missing columns",
            "fail",
            f"{spec.path.name} has columns {ds.column_names}; expected {expected} "
            f"(missing {missing}: map them with text_column / label_column)",
        )
    return CheckResult(
        "schema", split, 0, "0 missing columns", "pass", f"columns {expected} present"
    )


def map_labels(values: list, names: list[str]) -> tuple[list[int | None], list[int]]:
    """Label ids for ints (index into names) or strings (class names); rows that match neither."""
    index = {name: i for i, name in enumerate(names)}
    ids: list[int | None] = []
    bad: list[int] = []
    for row, value in enumerate(values, start=1):
        if isinstance(value, bool):
            label = None
        elif isinstance(value, int):
            label = value if 0 <= value < len(names) else None
        elif isinstance(value, str) and value.strip() in index:
            label = index[value.strip()]
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
            label = number if 0 <= number < len(names) else None
        else:
            label = None
        ids.append(label)
        if label is None:
            bad.append(row)
    return ids, bad


def check_split(
    split: str, texts: list, labels: list, names: list[str]
) -> tuple[list[CheckResult], list[int]]:
    results = []
    empty = [i for i, t in enumerate(texts, start=1) if not isinstance(t, str) or not t.strip()]
    results.append(
        CheckResult(
            "empty_text",
            split,
            len(empty),
            "0 rows",
            "fail" if empty else "pass",
            f"{len(empty)} empty or whitespace-only texts",
            tuple(empty[:MAX_EXAMPLES]),
        )
    )
    ids, bad = map_labels(labels, names)
    unknown = sorted({str(labels[r - 1]) for r in bad})
    results.append(
        CheckResult(
            "labels",
            split,
            len(bad),
            "0 rows",
            "fail" if bad else "pass",
            f"{len(bad)} labels not in {names} or ids 0..{len(names) - 1}"
            + (f": {unknown[:5]}" if bad else ""),
            tuple(bad[:MAX_EXAMPLES]),
        )
    )
    return results, ids


def fingerprint(prepared: DatasetDict) -> str:
    """sha256 over the mapped content of every split (text, label id) and the class names."""
    digest = hashlib.sha256()
    names = prepared["train"].features["label"].names
    digest.update(json.dumps(names).encode())
    for split in SPLITS:
        digest.update(f"\n[{split}]\n".encode())
        for text, label in zip(prepared[split]["text"], prepared[split]["label"], strict=True):
            digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def prepare(spec: DataSpec, out_root: Path) -> DataReport:
    """Load, check and map both splits; save the prepared data under its fingerprint."""
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(spec.labels))})
    checks: list[CheckResult] = []
    mapped: dict[str, Dataset] = {}
    for split in SPLITS:
        split_spec: SplitSpec = getattr(spec, split)
        ds = load_split(split_spec)
        schema = check_schema(split, ds, split_spec)
        checks.append(schema)
        if schema.verdict == "fail":
            continue
        texts = ds[split_spec.text_column]
        split_checks, ids = check_split(
            split, texts, ds[split_spec.label_column], list(spec.labels)
        )
        checks += split_checks
        if any(c.verdict == "fail" for c in split_checks):
            continue
        table = Dataset.from_dict(
            {"text": [t.strip() for t in texts], "label": ids}, features=features
        )
        if split_spec.max_samples and split_spec.max_samples < len(table):
            table = table.shuffle(seed=spec.seed).select(range(split_spec.max_samples))
        mapped[split] = table

    if len(mapped) == len(SPLITS):
        train_labels, eval_labels = set(mapped["train"]["label"]), set(mapped["eval"]["label"])
        missing = sorted(spec.labels[i] for i in eval_labels - train_labels)
        checks.append(
            CheckResult(
                "label_coverage",
                "train",
                len(missing),
                "0 eval classes unseen in train",
                "warn" if missing else "pass",
                f"eval classes never seen in train: {missing}"
                if missing
                else "every eval class is in train",
            )
        )
    failed = [c for c in checks if c.verdict == "fail"]
    rows = {s: len(d) for s, d in mapped.items()}
    if failed:
        return DataReport("", tuple(spec.labels), rows, tuple(checks), "")
    prepared = DatasetDict(mapped)
    digest = fingerprint(prepared)
    path = Path(out_root) / digest[:16]
    if not (path / "dataset_dict.json").is_file():
        prepared.save_to_disk(str(path))
    return DataReport(digest, tuple(spec.labels), rows, tuple(checks), str(path))


def load_prepared(path: str | Path) -> DatasetDict:
    return load_from_disk(str(path))


def failure_message(report: DataReport) -> str:
    return "data validation failed: " + "; ".join(c.line() for c in report.failed)
