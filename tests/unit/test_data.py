"""Data loading, checks and fingerprint: fixture files with one defect each, and real SST-2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import ClassLabel, Value

from tasks.core.config import DataSpec, SplitSpec
from tasks.core.data import DataError, failure_message, load_prepared, load_split, prepare

LABELS = ["negative", "positive"]
CLEAN = [
    ("a dull , lifeless film", 0),
    ("warm and funny", 1),
    ("not worth the ticket", 0),
    ("a small gem", 1),
]


def write_split(path: Path, rows: list[tuple], text: str = "text", label: str = "label") -> Path:
    """Write (text, label) rows in the format named by the suffix; columns: label, text."""
    fmt = path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tsv":
        lines = [f"{label}\t{text}"] + [f"{y}\t{x}" for x, y in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([label, text])
            writer.writerows([y, x] for x, y in rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({label: y, text: x}) + "\n" for x, y in rows))
    elif fmt == "parquet":
        pd.DataFrame({label: [y for _, y in rows], text: [x for x, _ in rows]}).to_parquet(path)
    else:
        raise ValueError(fmt)
    return path


def spec_for(train: Path, eval: Path, *, labels=LABELS, seed=0, **train_options) -> DataSpec:
    return DataSpec(
        name="fixture",
        labels=labels,
        train=SplitSpec(path=train, text_column="text", label_column="label", **train_options),
        eval=SplitSpec(path=eval, text_column="text", label_column="label"),
        seed=seed,
    )


def check_map(report) -> dict[tuple[str, str], str]:
    return {(c.check, c.split): c.verdict for c in report.checks}


# --------------------------------------------------------------------------------------------
# One defect per fixture: exactly that check fails, naming the 1-based data rows.
# --------------------------------------------------------------------------------------------

DEFECTS = [
    pytest.param(
        "train",
        "tsv",
        [("good", 1), ("", 0), ("bad", 0)],
        "empty_text",
        (2,),
        "1 empty or whitespace-only texts",
        id="tsv-empty-text",
    ),
    pytest.param(
        "train",
        "csv",
        [("good", 1), ("   ", 0), ("fine", 1), ("  ", 0)],
        "empty_text",
        (2, 4),
        "2 empty or whitespace-only texts",
        id="csv-whitespace-text",
    ),
    pytest.param(
        "eval",
        "jsonl",
        [("good", 1), ("", 0), (None, 1)],
        "empty_text",
        (2, 3),
        "2 empty or whitespace-only texts",
        id="jsonl-empty-and-null-text",
    ),
    pytest.param(
        "eval",
        "parquet",
        [("good", 1), ("bad", 0), (" \t ", 1)],
        "empty_text",
        (3,),
        "1 empty or whitespace-only texts",
        id="parquet-whitespace-text",
    ),
    pytest.param(
        "train",
        "tsv",
        [("a", 1), ("b", 2), ("c", 0), ("d", -1)],
        "labels",
        (2, 4),
        "2 labels not in ['negative', 'positive'] or ids 0..1: ['-1', '2']",
        id="tsv-int-label-out-of-range",
    ),
    pytest.param(
        "train",
        "csv",
        [("a", "positive"), ("b", "neutral"), ("c", "negative")],
        "labels",
        (2,),
        "1 labels not in ['negative', 'positive'] or ids 0..1: ['neutral']",
        id="csv-unknown-string-label",
    ),
    pytest.param(
        "eval",
        "jsonl",
        [("a", 0), ("b", 1), ("c", 5)],
        "labels",
        (3,),
        "1 labels not in ['negative', 'positive'] or ids 0..1: ['5']",
        id="jsonl-int-label-out-of-range",
    ),
    pytest.param(
        "eval",
        "parquet",
        [("a", "Positive"), ("b", "positive")],
        "labels",
        (1,),
        "['Positive']",
        id="parquet-label-case-matters",
    ),
    pytest.param(
        "train",
        "csv",
        [(f"t{i}", "maybe") for i in range(8)],
        "labels",
        (1, 2, 3, 4, 5),
        "8 labels not in",
        id="examples-capped-at-5",
    ),
]


@pytest.mark.parametrize(("split", "fmt", "rows", "check", "examples", "detail"), DEFECTS)
def test_one_defect_fails_exactly_one_check(tmp_path, split, fmt, rows, check, examples, detail):
    files = {
        "train": write_split(tmp_path / f"train.{fmt if split == 'train' else 'tsv'}", CLEAN),
        "eval": write_split(tmp_path / f"eval.{fmt if split == 'eval' else 'tsv'}", CLEAN),
    }
    files[split] = write_split(files[split], rows)
    report = prepare(spec_for(files["train"], files["eval"]), tmp_path / "prepared")

    assert report.verdict == "fail"
    (failed,) = report.failed
    assert (failed.check, failed.split) == (check, split)
    assert failed.examples == examples
    assert detail in failed.detail
    assert failed.figure == int(failed.detail.split()[0]) >= len(examples)
    assert failed.line().endswith(f"(rows {', '.join(map(str, examples))})")
    assert failure_message(report).startswith(f"data validation failed: {check} [{split}]: ")
    others = {k: v for k, v in check_map(report).items() if k != (check, split)}
    assert set(others.values()) == {"pass"}
    assert (report.fingerprint, report.prepared_path) == ("", "")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("split", ["train", "eval"])
def test_missing_mapped_column_fails_schema_naming_split_found_and_expected(tmp_path, split):
    files = {s: write_split(tmp_path / f"{s}.csv", CLEAN) for s in ("train", "eval")}
    files[split] = write_split(tmp_path / f"{split}-renamed.csv", CLEAN, text="sentence")
    report = prepare(spec_for(files["train"], files["eval"]), tmp_path / "prepared")
    (failed,) = report.failed
    assert (failed.check, failed.split) == ("schema", split)
    assert failed.figure == 1
    assert f"{split}-renamed.csv has columns ['label', 'sentence']" in failed.detail
    assert "expected ['text', 'label']" in failed.detail
    assert "missing ['text']" in failed.detail
    assert failed.line().startswith(f"schema [{split}]: ")
    # The other split is still checked in full.
    other = "eval" if split == "train" else "train"
    assert check_map(report)[("labels", other)] == "pass"
    assert ("empty_text", split) not in check_map(report)


def test_clean_fixtures_pass_every_check_in_every_format(tmp_path):
    train = write_split(tmp_path / "train.parquet", CLEAN)
    eval = write_split(tmp_path / "eval.jsonl", CLEAN)
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    assert report.verdict == "pass" and report.failed == []
    assert {c.verdict for c in report.checks} == {"pass"}
    assert {c.check for c in report.checks} == {"schema", "empty_text", "labels", "label_coverage"}
    assert report.rows == {"train": 4, "eval": 4}
    assert report.label_names == tuple(LABELS)
    assert report.to_dict()["verdict"] == "pass"
    for fmt in ("tsv", "csv"):
        other = prepare(
            spec_for(
                write_split(tmp_path / f"t.{fmt}", CLEAN), write_split(tmp_path / f"e.{fmt}", CLEAN)
            ),
            tmp_path / "prepared",
        )
        assert other.verdict == "pass" and other.fingerprint == report.fingerprint, fmt


def test_eval_class_unseen_in_train_only_warns(tmp_path):
    train = write_split(tmp_path / "train.tsv", [("bad", 0), ("awful", 0)])
    eval = write_split(tmp_path / "eval.tsv", CLEAN)
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    assert report.verdict == "pass"
    coverage = [c for c in report.checks if c.check == "label_coverage"][0]
    assert coverage.verdict == "warn" and "['positive']" in coverage.detail


def test_string_labels_map_to_ids_by_name(tmp_path):
    rows = [("a", "positive"), ("b", "negative"), ("c", " positive "), ("d", "0"), ("e", "1")]
    train = write_split(tmp_path / "train.csv", rows)
    eval = write_split(tmp_path / "eval.jsonl", [("x", "negative"), ("y", "positive")])
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    assert report.verdict == "pass"
    prepared = load_prepared(report.prepared_path)
    assert prepared["train"]["label"] == [1, 0, 1, 0, 1]
    assert prepared["eval"]["label"] == [0, 1]


def test_load_prepared_round_trip(tmp_path):
    train = write_split(tmp_path / "train.tsv", [("  padded text  ", 1), ("plain", 0)])
    eval = write_split(tmp_path / "eval.tsv", CLEAN)
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    prepared = load_prepared(report.prepared_path)
    assert set(prepared) == {"train", "eval"}
    for split in prepared.values():
        assert split.features["text"] == Value("string")
        assert split.features["label"] == ClassLabel(names=LABELS)
    assert prepared["train"]["text"] == ["padded text", "plain"]
    assert prepared["train"].features["label"].int2str(prepared["train"]["label"]) == [
        "positive",
        "negative",
    ]
    assert prepared["eval"].to_dict() == {
        "text": [t for t, _ in CLEAN],
        "label": [y for _, y in CLEAN],
    }


# --------------------------------------------------------------------------------------------
# Fingerprint and subset.
# --------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_names_the_prepared_path(tmp_path):
    train = write_split(tmp_path / "train.tsv", CLEAN)
    eval = write_split(tmp_path / "eval.tsv", CLEAN)
    first = prepare(spec_for(train, eval), tmp_path / "out-a")
    second = prepare(spec_for(train, eval), tmp_path / "out-b")
    again = prepare(spec_for(train, eval), tmp_path / "out-a")
    assert len(first.fingerprint) == 64
    assert first.fingerprint == second.fingerprint == again.fingerprint
    assert Path(first.prepared_path) == tmp_path / "out-a" / first.fingerprint[:16]
    assert Path(second.prepared_path).name == first.fingerprint[:16]
    assert (Path(first.prepared_path) / "dataset_dict.json").is_file()


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ("one-label", True),
        ("one-text", True),
        ("class-names", True),
        ("surrounding-space", False),
    ],
)
def test_fingerprint_follows_the_mapped_content(tmp_path, change, differs):
    eval = write_split(tmp_path / "eval.tsv", CLEAN)
    reference = prepare(spec_for(write_split(tmp_path / "ref.tsv", CLEAN), eval), tmp_path / "o")
    rows, labels = list(CLEAN), LABELS
    if change == "one-label":
        rows[2] = (rows[2][0], 1 - rows[2][1])
    elif change == "one-text":
        rows[0] = (rows[0][0] + "!", rows[0][1])
    elif change == "class-names":
        labels = ["neg", "pos"]
    else:
        rows[1] = (f"  {rows[1][0]} ", rows[1][1])
    report = prepare(
        spec_for(write_split(tmp_path / "changed.tsv", rows), eval, labels=labels), tmp_path / "o"
    )
    assert report.verdict == "pass"
    assert (report.fingerprint != reference.fingerprint) is differs
    assert (report.prepared_path != reference.prepared_path) is differs


def test_max_samples_subset_is_deterministic_for_a_seed(tmp_path):
    rows = [(f"sentence number {i}", i % 2) for i in range(40)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", CLEAN)

    def subset(seed: int, out: str) -> tuple[str, list[str]]:
        report = prepare(spec_for(train, eval, seed=seed, max_samples=10), tmp_path / out)
        assert report.rows == {"train": 10, "eval": 4}
        return report.fingerprint, load_prepared(report.prepared_path)["train"]["text"]

    first, second, other = subset(0, "a"), subset(0, "b"), subset(1, "c")
    assert first == second
    assert other[0] != first[0] and other[1] != first[1]
    assert set(first[1]) <= {text for text, _ in rows} and len(set(first[1])) == 10
    full = prepare(spec_for(train, eval, max_samples=40), tmp_path / "d")
    assert full.rows["train"] == 40


# --------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = tmp_path / "train.data"
    write_split(tmp_path / "train.tsv", CLEAN).rename(path)
    spec = SplitSpec(path=path, format="tsv", text_column="text", label_column="label")
    assert load_split(spec)["text"] == [t for t, _ in CLEAN]


def test_tsv_keeps_quotes_and_na_like_text(tmp_path):
    rows = [('he said " wow', 1), ("NA", 0), ("null", 1), ("'quoted'", 0)]
    spec = SplitSpec(
        path=write_split(tmp_path / "t.tsv", rows), text_column="text", label_column="label"
    )
    assert load_split(spec)["text"] == [t for t, _ in rows]


def test_unreadable_file_raises_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    spec = SplitSpec(path=path, text_column="text", label_column="label")
    with pytest.raises(DataError, match="broken.parquet: cannot be read as parquet"):
        load_split(spec)


# --------------------------------------------------------------------------------------------
# Real SST-2 from ../shared/data/sst2 (train: label, sentence; dev: label, content).
# --------------------------------------------------------------------------------------------


def sst2_spec(sst2_dir: Path, eval_text_column: str) -> DataSpec:
    return DataSpec(
        name="sst2",
        license="cc-by-4.0",
        labels=LABELS,
        train=SplitSpec(
            path=sst2_dir / "train.tsv",
            text_column="sentence",
            label_column="label",
            max_samples=2000,
        ),
        eval=SplitSpec(
            path=sst2_dir / "dev.tsv", text_column=eval_text_column, label_column="label"
        ),
    )


def test_sst2_loads_every_row(sst2_dir):
    train = load_split(
        SplitSpec(path=sst2_dir / "train.tsv", text_column="sentence", label_column="label")
    )
    dev = load_split(
        SplitSpec(path=sst2_dir / "dev.tsv", text_column="content", label_column="label")
    )
    assert (train.num_rows, dev.num_rows) == (67_349, 872)
    assert train.column_names == ["label", "sentence"]
    assert dev.column_names == ["label", "content"]


def test_sst2_eval_mapped_with_the_train_column_fails_schema(sst2_dir, tmp_path):
    report = prepare(sst2_spec(sst2_dir, "sentence"), tmp_path / "prepared")
    (failed,) = report.failed
    assert (failed.check, failed.split) == ("schema", "eval")
    assert "dev.tsv has columns ['label', 'content']" in failed.detail
    assert "expected ['sentence', 'label']" in failed.detail
    message = failure_message(report)
    assert "schema [eval]" in message and "['label', 'content']" in message
    assert check_map(report)[("labels", "train")] == "pass"


def test_sst2_correctly_mapped_passes(sst2_dir, tmp_path):
    report = prepare(sst2_spec(sst2_dir, "content"), tmp_path / "prepared")
    assert report.verdict == "pass", failure_message(report)
    assert report.rows == {"train": 2000, "eval": 872}
    assert {c.verdict for c in report.checks} == {"pass"}
    prepared = load_prepared(report.prepared_path)
    assert set(prepared["train"]["label"]) == {0, 1}
    assert prepared["eval"]["text"][0] == "one long string of cliches ."
