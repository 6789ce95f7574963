"""Prepare the data for training: load, map, check, fingerprint and save both splits.

Every split is mapped to one schema (``text``: string, ``label``: ClassLabel with the configured
names), checked (see ``data_checks``, ``pii``, ``token_lengths``), fingerprinted and saved once
under a content-addressed folder: later stages receive that path, never the data. Checks run
over the whole files, so their row numbers are the files' data rows; a ``max_samples`` subset
is drawn afterwards from the rows that passed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from tasks.core.config.data import DataSpec
from tasks.core.data.checks import (
    check_balance,
    check_duplicates,
    check_label_set,
    check_leakage,
    check_pii,
    check_rows,
    check_schema,
)
from tasks.core.data.loading import comparison_keys, label_ids, load_split, normalize_texts
from tasks.core.data.pii import scan
from tasks.core.data.report import (
    CheckResult,
    DataReport,
)
from tasks.core.data.token_lengths import check_token_lengths

SPLITS = ("train", "eval")
CHECK_ORDER = (
    "schema",
    "empty_text",
    "labels",
    "label_set",
    "class_balance",
    "duplicates",
    "normalized_duplicates",
    "conflicting_labels",
    "leakage",
    "normalized_leakage",
    "pii",
    "token_lengths",
)


def map_split(split: str, spec: DataSpec, checks: list[CheckResult]) -> pd.DataFrame | None:
    """The split as ``text``, ``label_id``, ``row`` (1-based), ``key``; None if unmappable.

    Appends the schema, row, and PII results to ``checks``; redacts PII when the policy says so.
    """
    split_spec = getattr(spec, split)
    names = list(spec.labels)
    source = load_split(split_spec)
    raw = source.to_pandas()
    schema, usable = check_schema(split, raw, split_spec, spec.checks.column_types)
    checks.append(schema)
    if not usable:
        return None
    labels = raw[split_spec.label_column]
    frame = pd.DataFrame(
        {
            "text": normalize_texts(raw[split_spec.text_column], spec.normalize),
            "label_id": label_ids(labels, names, source.features.get(split_spec.label_column)),
        }
    )
    checks += check_rows(split, frame, labels, names, spec.checks)
    if spec.pii.policy != "off":
        found = scan(frame["text"], spec.pii.kinds, spec.pii.phone_region)
        checks.append(check_pii(split, found, spec.pii.policy))
        if spec.pii.policy == "redact" and found.rows:
            frame["text"] = found.redacted(frame["text"])
    frame["row"] = np.arange(1, len(frame) + 1)
    frame["key"] = comparison_keys(frame["text"])
    return frame


def usable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a text and a class: what duplicate, balance and leakage checks compare."""
    return frame[frame["label_id"].notna() & (frame["text"] != "")]


def run_checks(
    spec: DataSpec, tokenizer=None, max_length: int = 128
) -> tuple[dict[str, pd.DataFrame], list[CheckResult]]:
    """Every enabled check over both splits; the mapped frames of the splits that map."""
    cfg = spec.checks
    names = list(spec.labels)
    checks: list[CheckResult] = []
    frames: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        frame = map_split(split, spec, checks)
        if frame is None:
            continue
        frames[split] = frame
        usable = usable_rows(frame)
        checks += check_duplicates(split, usable, cfg)
        if cfg.class_balance != "off":
            checks.append(check_balance(split, usable["label_id"], names, cfg))
        if tokenizer is not None and cfg.token_lengths != "off":
            texts = frame["text"].tolist()
            checks.append(check_token_lengths(split, texts, tokenizer, max_length, cfg))
    if len(frames) == len(SPLITS):
        train, eval = usable_rows(frames["train"]), usable_rows(frames["eval"])
        if cfg.label_set != "off":
            checks.append(check_label_set(train, eval, names, cfg.label_set))
        checks += check_leakage(train, eval, cfg)
    order = {name: i for i, name in enumerate(CHECK_ORDER)}
    checks.sort(key=lambda c: (order.get(c.check, len(order)), SPLITS.index(c.split)))
    return frames, checks


def fingerprint(prepared: DatasetDict) -> str:
    """sha256 over the mapped content of every split (text, label id) and the class names."""
    digest = hashlib.sha256()
    names = prepared["train"].features["label"].names
    digest.update(json.dumps(names).encode())
    for split in SPLITS:
        digest.update(f"\n[{split}]\n".encode())
        rows = prepared[split][:]  # whole columns as lists: one Arrow conversion, not per row
        for text, label in zip(rows["text"], rows["label"], strict=True):
            digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def prepare(
    spec: DataSpec,
    out_root: Path,
    tokenizer=None,
    max_length: int = 128,
    tokenizer_name: str = "",
) -> DataReport:
    """Load, map and check both splits; save the prepared data under its fingerprint.

    ``tokenizer`` (the model's) enables the token-length check. Nothing is saved, and the
    fingerprint is empty, when a check at severity ``fail`` fires.
    """
    frames, checks = run_checks(spec, tokenizer, max_length)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(spec.labels))})
    mapped: dict[str, Dataset] = {}
    for split, frame in frames.items():
        kept = frame[frame["label_id"].notna()]
        table = Dataset.from_dict(
            {"text": kept["text"].tolist(), "label": kept["label_id"].astype(int).tolist()},
            features=features,
        )
        limit = getattr(spec, split).max_samples
        if limit and limit < len(table):
            table = table.shuffle(seed=spec.seed).select(range(limit))
        mapped[split] = table
    rows = {s: len(d) for s, d in mapped.items()}
    meta = {"tokenizer": tokenizer_name, "max_length": max_length if tokenizer else None}
    if any(c.verdict == "fail" for c in checks) or len(mapped) < len(SPLITS):
        return DataReport("", tuple(spec.labels), rows, tuple(checks), "", **meta)
    prepared = DatasetDict(mapped)
    digest = fingerprint(prepared)
    path = Path(out_root) / digest[:16]
    if not (path / "dataset_dict.json").is_file():
        prepared.save_to_disk(str(path))
    return DataReport(digest, tuple(spec.labels), rows, tuple(checks), str(path), **meta)


def load_prepared(path: str | Path) -> DatasetDict:
    return load_from_disk(str(path))
