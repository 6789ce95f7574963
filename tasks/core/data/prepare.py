"""Prepare the data for training: load, map, check, fingerprint and save both splits.

Every split is mapped to one schema (``text``: string, ``label``: ClassLabel with the configured
names), checked (see ``data_checks``, ``pii``, ``token_lengths``), fingerprinted and saved once
under a content-addressed folder: later stages receive that path, never the data. Checks run
over the whole files, so their row numbers are the files' data rows; a ``max_samples`` subset
is drawn afterwards from the rows that passed. Token lengths alone are counted over the rows
that are trained and evaluated (``drawn``): truncation happens only there, and on the
quickstart (8,000 of SST-2's 67,349 train rows) counting the rest took ~2 s of its start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from tasks.core.config.data import DataSpec, SplitSpec
from tasks.core.data.checks import (
    check_balance,
    check_duplicates,
    check_label_set,
    check_leakage,
    check_pii,
    check_rows,
    check_schema,
)
from tasks.core.data.loading import comparison_keys, label_ids, load_split, source_uri
from tasks.core.data.pii import scan
from tasks.core.data.preprocess import Preprocessing
from tasks.core.data.report import (
    CheckResult,
    DataReport,
)
from tasks.core.data.sampling import dedupe, sample_positions, split_result, split_rows
from tasks.core.data.token_lengths import check_token_lengths

SPLITS = ("train", "eval")
CHECK_ORDER = (
    "split",
    "dedupe",
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


def map_split(
    split: str, split_spec: SplitSpec, spec: DataSpec, checks: list[CheckResult]
) -> pd.DataFrame | None:
    """The source as ``text``, ``label_id``, ``row`` (1-based), ``key``; None if unmappable.

    Texts go through the same ``Preprocessing`` steps the registered model applies at serving
    (normalisation, then redaction under policy ``redact``). Appends the schema, row and PII
    results to ``checks``.
    """
    names = list(spec.labels)
    source = load_split(split_spec)
    raw = source.to_pandas()
    schema, usable = check_schema(split, raw, split_spec, spec.checks.column_types)
    checks.append(schema)
    if not usable:
        return None
    labels = raw[split_spec.label_column]
    preprocessing = Preprocessing.from_spec(spec)
    frame = pd.DataFrame(
        {
            "text": preprocessing.normalized(raw[split_spec.text_column]),
            "label_id": label_ids(
                labels, names, source.features.get(split_spec.label_column), spec.label_map
            ),
        }
    )
    checks += check_rows(split, frame, labels, names, spec.checks)
    if spec.pii.policy != "off":
        found = scan(frame["text"], spec.pii.kinds, spec.pii.phone_regions)
        checks.append(check_pii(split, found, spec.pii.policy, spec.pii.phone_regions))
        if preprocessing.redact and found.rows:
            frame["text"] = found.redacted(frame["text"])
    frame["row"] = np.arange(1, len(frame) + 1)
    frame["key"] = comparison_keys(frame["text"])
    return frame


def mapped_splits(spec: DataSpec, checks: list[CheckResult]) -> dict[str, pd.DataFrame]:
    """Both splits, mapped: from their own sources, or split from the one train file."""
    if spec.split is None:
        frames = {s: map_split(s, spec.splits[s], spec, checks) for s in SPLITS}
        return {s: f for s, f in frames.items() if f is not None}
    whole = map_split("train", spec.train, spec, checks)
    if whole is None:
        return {}
    train, eval = split_rows(whole, spec.split)
    checks.append(split_result(train, eval, spec.split))
    return {"train": train, "eval": eval}


def drawn(spec: DataSpec, split: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a mapped split that are trained or evaluated: those with a class, or the
    ``max_samples`` subset of them (the rows ``sampling.subset`` draws, in its order)."""
    kept = frame[frame["label_id"].notna()]
    limit = spec.splits[split].max_samples if spec.eval or split == "train" else None
    if not limit or limit >= len(kept):
        return kept
    return kept.iloc[sample_positions(kept["label_id"].to_numpy(dtype=np.int64), limit, spec.seed)]


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
    frames = mapped_splits(spec, checks)
    for split, frame in list(frames.items()):
        if spec.dedupe != "off":
            frame, result = dedupe(split, frame, spec.dedupe)
            frames[split] = frame
            checks.append(result)
        usable = usable_rows(frame)
        checks += check_duplicates(split, usable, cfg)
        if cfg.class_balance != "off":
            checks.append(check_balance(split, usable["label_id"], names, cfg))
        if tokenizer is not None and cfg.token_lengths != "off":
            used = drawn(spec, split, frame)
            texts, rows = used["text"].tolist(), used["row"].tolist()
            checks.append(check_token_lengths(split, texts, tokenizer, max_length, cfg, rows))
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
    return fingerprints(prepared)[0]


def fingerprints(prepared: DatasetDict) -> tuple[str, dict[str, str]]:
    """The dataset's sha256 and each split's own (what MLflow records as its inputs)."""
    digest = hashlib.sha256()
    names = prepared["train"].features["label"].names
    digest.update(json.dumps(names).encode())
    per_split = {}
    for split in SPLITS:
        digest.update(f"\n[{split}]\n".encode())
        own = hashlib.sha256(json.dumps(names).encode())
        rows = prepared[split][:]  # whole columns as lists: one Arrow conversion, not per row
        for text, label in zip(rows["text"], rows["label"], strict=True):
            line = f"{label}\t{text}\n".encode()
            digest.update(line)
            own.update(line)
        per_split[split] = own.hexdigest()
    return digest.hexdigest(), per_split


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
    if spec.kind == "generative":
        from tasks.core.data.sft import prepare_sft

        return prepare_sft(spec, out_root, tokenizer, max_length, tokenizer_name)
    frames, checks = run_checks(spec, tokenizer, max_length)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(spec.labels))})
    mapped: dict[str, Dataset] = {}
    for split, frame in frames.items():
        kept = drawn(spec, split, frame)
        mapped[split] = Dataset.from_dict(
            {"text": kept["text"].tolist(), "label": kept["label_id"].astype(int).tolist()},
            features=features,
        )
    rows = {s: len(d) for s, d in mapped.items()}
    meta = {
        "tokenizer": tokenizer_name,
        "max_length": max_length if tokenizer else None,
        "preprocessing": Preprocessing.from_spec(spec).to_dict(),
        "sources": {s: source_uri(source) for s, source in spec.splits.items()},
        "name": spec.name,
    }
    if any(c.verdict == "fail" for c in checks) or len(mapped) < len(SPLITS):
        return DataReport("", tuple(spec.labels), rows, tuple(checks), "", **meta)
    prepared = DatasetDict(mapped)
    digest, digests = fingerprints(prepared)
    path = Path(out_root) / digest[:16]
    if not (path / "dataset_dict.json").is_file():
        prepared.save_to_disk(str(path))
    return DataReport(
        digest, tuple(spec.labels), rows, tuple(checks), str(path), digests=digests, **meta
    )


def load_prepared(path: str | Path) -> DatasetDict:
    return load_from_disk(str(path))
