"""Read one split through ``datasets``, and map its texts and labels to the common schema.

Local files (csv / tsv / json / jsonl / parquet, with or without a header line) and Hub dataset
ids go through ``datasets.load_dataset``; a Hub id is served offline from the local datasets
cache (``HF_HOME``), exactly as after an online download. Each split loads on its own because
splits may name their columns differently.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import unicodedata
from pathlib import Path

import datasets
import pandas as pd
from datasets import ClassLabel, Dataset, load_dataset
from datasets.naming import camelcase_to_snakecase

from tasks.core.config.data import SplitSpec
from tasks.core.errors import DataError


def _load_hub(spec: SplitSpec) -> Dataset:
    try:
        return load_dataset(spec.hub_id, name=spec.hub_config, split=spec.hub_split)
    except Exception as exc:  # ConnectionError offline, ValueError for an unknown split, ...
        raise DataError(
            f"{spec.source}: cannot load the Hub dataset from the local cache "
            f"{datasets.config.HF_DATASETS_CACHE}: {exc}"
        ) from exc


def load_split(spec: SplitSpec) -> Dataset:
    """The split's rows as they are in the source, columns untouched."""
    if spec.hub_id is not None:
        return _load_hub(spec)
    fmt = spec.resolved_format
    kwargs: dict = {}
    if fmt in ("csv", "tsv"):
        builder = "csv"
        kwargs = {
            "delimiter": "\t" if fmt == "tsv" else ",",
            "quoting": csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
            "keep_default_na": False,
        }
        if not spec.header:
            kwargs["header"] = None
            if spec.column_names:
                kwargs["column_names"] = list(spec.column_names)
    elif fmt in ("json", "jsonl"):
        builder = "json"
    else:
        builder = "parquet"
    if fmt != "parquet":
        check_text_file(Path(spec.path), fmt, spec.header)
    try:
        return load_dataset(builder, data_files=str(spec.path), split="train", **kwargs)
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DataError(f"{spec.path}: cannot be read as {fmt}: {root_cause(exc)}") from exc


def root_cause(exc: BaseException) -> str:
    """The innermost error of a chain: ``datasets`` wraps the reader's real complaint in
    'An error occurred while generating the dataset'."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    inner = next((e for e in seen if "error occurred while generating" not in str(e)), seen[0])
    return f"{type(inner).__name__}: {inner}"


def _utf8_error(path: Path) -> str | None:
    """Where the file stops being UTF-8 ('byte 0xe9 at offset 23, line 2'), or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                return f"byte 0x{chunk[exc.start]:02x} at offset {at} (line {line})"
            offset += len(chunk)
            line += chunk.count(b"\n")
    return None


def check_text_file(path: Path, fmt: str, header: bool = True) -> None:
    """Refuse, naming the cause, what ``datasets`` would fail on obscurely: an empty file,
    a file that is not UTF-8, a header without rows, CSV content in a .tsv (and back)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected {fmt} rows")
    bad = _utf8_error(path)
    if bad is not None:
        raise DataError(
            f"{path}: not UTF-8 text: {bad}; re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    with path.open(encoding="utf-8") as handle:
        lines = [line for line in (handle.readline() for _ in range(3)) if line.strip()]
    if not lines:
        raise DataError(f"{path}: holds only blank lines; expected {fmt} rows")
    if fmt in ("csv", "tsv") and header and len(lines) == 1:
        raise DataError(f"{path}: holds a header line ({lines[0].strip()[:80]!r}) but no data rows")
    first = lines[0]
    if fmt == "tsv" and "\t" not in first:
        hint = (
            "looks like CSV (commas, no tabs): set format: csv"
            if "," in first
            else (
                "holds no tab in its first line: a tsv needs tab-separated text and label columns"
            )
        )
        raise DataError(f"{path}: {hint}")
    if fmt == "csv" and "," not in first and "\t" in first:
        raise DataError(f"{path}: looks like TSV (tabs, no commas): set format: tsv")


def source_digest(spec: SplitSpec) -> str:
    """What a cache key needs to notice a changed source: the file's bytes or the cache state."""
    digest = hashlib.sha256()
    if spec.path is not None:
        with Path(spec.path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    namespace, _, name = (spec.hub_id or "").rpartition("/")
    folder = "___".join(p for p in (namespace, camelcase_to_snakecase(name)) if p)
    root = Path(datasets.config.HF_DATASETS_CACHE)
    for path in sorted(root.glob(f"{folder}*/**/*")):
        if path.is_file():
            stat = path.stat()
            digest.update(
                f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def comparison_keys(texts: pd.Series) -> pd.Series:
    """The key near-duplicates and near-leakage compare: NFKC, case-folded, words only."""
    keys = texts.map(lambda t: unicodedata.normalize("NFKC", t).casefold())
    return keys.str.replace(r"[\W_]+", " ", regex=True).str.strip()


def _label_id(value, index: dict[str, int], count: int) -> int | None:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value < count else None
    text = str(value).strip()
    if text in index:
        return index[text]
    if text.lstrip("-").isdigit():
        number = int(text)
        return number if 0 <= number < count else None
    return None


def label_ids(
    values: pd.Series, names: list[str], feature=None, label_map: dict[str, str] | None = None
) -> pd.Series:
    """Class ids (nullable ints; NA where a value is no class) for ints, names or ClassLabel.

    A ClassLabel column (Hub datasets) maps through its own names, so a source whose class
    order differs from the config's still lands on the right ids. ``label_map`` (raw label
    as text -> class name) applies first.
    """
    label_map = label_map or {}
    index = {name: i for i, name in enumerate(names)}
    values = values.astype(object)  # numpy scalars become Python ints, floats, bools
    source = dict(enumerate(feature.names)) if isinstance(feature, ClassLabel) else {}
    cache: dict = {}  # keyed by type too: True, 1 and 1.0 are equal dict keys
    ids = []
    for value in values:
        key = (type(value), value)
        if key not in cache:
            named = value if isinstance(value, bool) or not source else source.get(value, value)
            if label_map and named is not None and str(named).strip() in label_map:
                named = label_map[str(named).strip()]
            cache[key] = _label_id(named, index, len(names))
        ids.append(cache[key])
    return pd.Series(ids, index=values.index, dtype="Int64")


def source_uri(spec: SplitSpec) -> str:
    """Where a split's rows come from: the file's path, or ``hf://ORG/NAME?split=...``."""
    if spec.hub_id is None:
        return str(spec.path)
    config = f"config={spec.hub_config}&" if spec.hub_config else ""
    return f"hf://{spec.hub_id}?{config}split={spec.hub_split}"
