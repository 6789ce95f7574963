"""One defect per fixture: exactly the expected check fires, naming the expected data rows.

Every case writes a clean train/eval pair, replaces one split with rows that carry one defect,
and runs the whole stage (with a real tokenizer, max_length 16). The clean pair itself passes
every check in every file format.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tasks.core.config.data import DataChecksSpec
from tasks.core.data.prepare import load_prepared, prepare
from tasks.core.data.report import failure_message
from tests.unit.data_fixtures import EVAL, TRAIN, fired, spec_for, write_split

MAX_LENGTH = 16
ALL_CHECKS = {
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
}


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(str(tiny_bert_dir))


def run(tmp_path: Path, tokenizer, split: str, fmt: str, rows: list[tuple], **sections):
    files = {
        "train": write_split(tmp_path / "clean-train.tsv", TRAIN),
        "eval": write_split(tmp_path / "clean-eval.tsv", EVAL),
    }
    if rows is not None:
        files[split] = write_split(tmp_path / f"defect-{split}.{fmt}", rows)
    spec = spec_for(files["train"], files["eval"], **sections)
    return prepare(spec, tmp_path / "prepared", tokenizer, MAX_LENGTH, "tiny")


DEFECTS = [
    # (split, format, rows, check, verdict, example rows, words in the detail)
    ("train", "tsv", [("good one", 1), ("", 0), ("bad one", 0)], "empty_text", "fail", (2,), "1 empty"),
    ("train", "csv", [("good", 1), ("   ", 0), ("fine", 0), ("  ", 1)], "empty_text", "fail", (2, 4), "2 empty"),
    ("eval", "jsonl", [("good", 1), ("", 0), (None, 1), ("poor", 0)], "empty_text", "fail", (2, 3), "2 empty"),
    ("eval", "parquet", [("good", 1), ("bad", 0), (" \t ", 1)], "empty_text", "fail", (3,), "1 empty"),
    ("train", "tsv", [("a", 1), ("b", 2), ("c", 0), ("d", -1)], "labels", "fail", (2, 4), "['-1', '2']"),
    ("train", "csv", [("a", "positive"), ("b", "neutral"), ("c", "negative")], "labels", "fail", (2,), "['neutral']"),
    ("eval", "jsonl", [("a", 0), ("b", 1), ("c", 5)], "labels", "fail", (3,), "['5']"),
    ("eval", "parquet", [("a", "Positive"), ("b", "positive"), ("c", "negative")], "labels", "fail", (1,), "['Positive']"),
    ("train", "csv", [*TRAIN, *[(f"t{i}", "maybe") for i in range(8)]], "labels", "fail", (5, 6, 7, 8, 9), "8 labels"),
    ("train", "tsv", [("bad", 0), ("awful", 0)], "label_set", "warn", (2, 4), "eval classes never seen in train: ['positive']"),
    ("eval", "tsv", [("poor", 0), ("dire", 0)], "label_set", "warn", (), "train classes missing from eval: ['positive']"),
    ("train", "tsv", [("neg text", 0), *[(f"pos text {i}", 1) for i in range(24)]], "class_balance", "warn", (), "'negative': 4.0%"),
    ("train", "tsv", [*TRAIN, ("warm and funny", 1)], "duplicates", "warn", (5,), "1 of 5 rows"),
    ("eval", "jsonl", [*EVAL, ("Badly  acted!", 0)], "normalized_duplicates", "warn", (5,), "1 of 5 rows"),
    ("train", "csv", [*TRAIN, ("warm and funny", 0)], "conflicting_labels", "warn", (2, 5), "'warm and funny' in rows 2, 5"),
    ("eval", "tsv", [*EVAL, ("a small gem", 1)], "leakage", "fail", (5,), "eval row 5 = train row 4"),
    ("eval", "tsv", [*EVAL, ("A small gem!", 1)], "normalized_leakage", "warn", (5,), "eval row 5 ~ train row 4"),
    ("train", "jsonl", [*TRAIN, ("mail jane.doe@example.com", 1)], "pii", "fail", (5,), "email 1"),
    ("eval", "csv", [*EVAL, ("card 4111 1111 1111 1111", 1)], "pii", "fail", (5,), "credit_card 1"),
    ("train", "tsv", [*TRAIN, (" ".join(["good"] * 20), 1)], "token_lengths", "warn", (5,), "1 of 5 texts (20.00%) exceed 16 tokens"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("split", "fmt", "rows", "check", "verdict", "examples", "detail"),
    [pytest.param(*case, id=f"{case[3]}-{case[0]}-{case[1]}") for case in DEFECTS],
)
def test_one_defect_fires_exactly_one_check(
    tmp_path, tokenizer, split, fmt, rows, check, verdict, examples, detail
):
    report = run(tmp_path, tokenizer, split, fmt, rows)
    expected_split = "eval" if check in ("label_set", "leakage", "normalized_leakage") else split
    assert fired(report) == {(check, expected_split): verdict}, report.table_rows()
    (result,) = [c for c in report.checks if c.verdict != "pass"]
    assert result.examples == examples
    assert detail in result.detail, result.detail
    assert {c.check for c in report.checks} == ALL_CHECKS
    if verdict == "fail":
        assert report.verdict == "fail"
        assert (report.fingerprint, report.prepared_path) == ("", "")
        assert not (tmp_path / "prepared").exists()
        message = failure_message(report)
        assert message.startswith(f"data validation failed: {check} [{expected_split}]: ")
        if examples:  # the rows, then (for PII) how to go on
            rows = f"(rows {', '.join(map(str, examples))})"
            assert message.endswith(rows) or f"{rows}; to go on: " in message, message
    else:  # a warning is recorded, the data is still prepared
        assert report.verdict == "pass" and len(report.fingerprint) == 64
        assert Path(report.prepared_path, "dataset_dict.json").is_file()


@pytest.mark.parametrize("fmt", ["tsv", "csv", "json", "jsonl", "parquet"])
def test_clean_fixture_passes_every_check(tmp_path, tokenizer, fmt):
    train = write_split(tmp_path / f"train.{fmt}", TRAIN)
    eval = write_split(tmp_path / f"eval.{fmt}", EVAL)
    report = prepare(spec_for(train, eval), tmp_path / "prepared", tokenizer, MAX_LENGTH, "tiny")
    assert fired(report) == {}
    assert {c.check for c in report.checks} == ALL_CHECKS
    assert len(report.checks) == 2 * len(ALL_CHECKS) - 3  # three cross-split checks: once
    assert report.rows == {"train": 4, "eval": 4}
    assert report.tokenizer == "tiny" and report.max_length == MAX_LENGTH


def test_int_text_column_fails_schema_naming_the_type(tmp_path, tokenizer):
    rows = [(101, 0), (202, 1)]
    report = run(tmp_path, tokenizer, "train", "parquet", rows)
    assert fired(report) == {("schema", "train"): "fail"}
    (schema,) = report.failed
    assert "defect-train.parquet: text holds int64, expected text (strings) (stop)" in schema.detail


def test_int_text_column_is_cast_when_column_types_warns(tmp_path, tokenizer):
    rows = [(101, 0), (202, 1)]
    checks = DataChecksSpec(column_types="warn")
    report = run(tmp_path, tokenizer, "train", "parquet", rows, checks=checks)
    assert fired(report) == {("schema", "train"): "warn"}
    assert "cast and go on" in report.warnings[0].detail
    assert load_prepared(report.prepared_path)["train"]["text"] == ["101", "202"]


def test_severity_off_removes_the_check_and_warn_keeps_the_run(tmp_path, tokenizer):
    rows = [*EVAL, ("a small gem", 1)]
    off = run(
        tmp_path / "off", tokenizer, "eval", "tsv", rows, checks=DataChecksSpec(leakage="off")
    )
    assert "leakage" not in {c.check for c in off.checks}
    assert off.verdict == "pass"
    # The exact overlap is not counted again as a normalised one.
    assert fired(off) == {}
    warn = run(
        tmp_path / "warn", tokenizer, "eval", "tsv", rows, checks=DataChecksSpec(leakage="warn")
    )
    assert fired(warn) == {("leakage", "eval"): "warn"} and warn.verdict == "pass"


def test_thresholds_let_a_small_share_pass(tmp_path, tokenizer):
    rows = [*TRAIN, ("warm and funny", 1)]  # 1 of 5 rows (20%) is a duplicate
    lenient = DataChecksSpec(duplicates="fail", max_duplicate_share=0.25)
    assert fired(run(tmp_path / "a", tokenizer, "train", "tsv", rows, checks=lenient)) == {}
    strict = DataChecksSpec(duplicates="fail", max_duplicate_share=0.1)
    report = run(tmp_path / "b", tokenizer, "train", "tsv", rows, checks=strict)
    assert fired(report) == {("duplicates", "train"): "fail"}
    assert report.failed[0].figure == pytest.approx(0.2)
    assert report.failed[0].threshold == "max 10.0% of rows"


def test_invalid_labels_are_dropped_when_the_labels_check_warns(tmp_path, tokenizer):
    rows = [*TRAIN, ("meh", "neutral")]
    report = run(tmp_path, tokenizer, "train", "csv", rows, checks=DataChecksSpec(labels="warn"))
    assert fired(report) == {("labels", "train"): "warn"}
    assert "(rows dropped)" in report.warnings[0].detail
    assert report.rows["train"] == 4
    assert "meh" not in load_prepared(report.prepared_path)["train"]["text"]


def test_token_lengths_report_percentiles_and_shares_at_each_length(tmp_path, tokenizer):
    rows = [*TRAIN, (" ".join(["good"] * 70), 1)]  # 72 tokens with [CLS] and [SEP]
    checks = DataChecksSpec(report_lengths=(8, 64, 128))
    report = run(tmp_path, tokenizer, "train", "tsv", rows, checks=checks)
    (lengths,) = [c for c in report.checks if c.check == "token_lengths" and c.split == "train"]
    assert lengths.stats["max"] == 72 and lengths.stats["count"] == 5
    assert lengths.stats["truncated_share"] == {"8": 0.2, "16": 0.2, "64": 0.2, "128": 0.0}
    assert "truncated at 8: 20.00%, 16: 20.00%, 64: 20.00%, 128: 0.00%" in lengths.detail


def test_token_lengths_count_only_the_rows_that_are_trained(tmp_path, tokenizer):
    """A file whose long texts are not in its ``max_samples`` subset passes the length check:
    truncation happens only to trained rows (counting all 67,349 SST-2 rows to train 8,000
    took ~2 s of the quickstart's start). Without a subset every row is counted."""
    from tasks.core.data.prepare import drawn, mapped_splits

    rows = [(f"short text number {i}", i % 2) for i in range(40)]
    rows += [(" ".join(["good"] * 40), 0), (" ".join(["good"] * 40), 1)]  # file rows 41, 42
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    checks = DataChecksSpec(token_lengths="fail")
    spec = spec_for(train, eval, seed=0, checks=checks, max_samples=10)
    trained = drawn(spec, "train", mapped_splits(spec, [])["train"])["row"].tolist()
    assert len(trained) == 10 and not {41, 42} & set(trained)  # seed 0 draws neither
    report = prepare(spec, tmp_path / "prepared", tokenizer, MAX_LENGTH, "tiny")
    (lengths,) = [c for c in report.checks if c.check == "token_lengths" and c.split == "train"]
    assert (lengths.verdict, lengths.stats["count"]) == ("pass", 10), lengths.detail
    assert report.verdict == "pass"
    whole = spec_for(train, eval, seed=0, checks=checks)
    report = prepare(whole, tmp_path / "whole", tokenizer, MAX_LENGTH, "tiny")
    (lengths,) = [c for c in report.checks if c.check == "token_lengths" and c.split == "train"]
    assert (lengths.verdict, lengths.examples) == ("fail", (41, 42))


def test_no_tokenizer_no_token_check(tmp_path):
    train = write_split(tmp_path / "train.tsv", TRAIN)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    assert "token_lengths" not in {c.check for c in report.checks}
    assert report.verdict == "pass" and report.max_length is None


@pytest.mark.parametrize("before", [None, "false"])
def test_token_counts_use_every_core_for_the_count_only(tokenizer, monkeypatch, before):
    """The Rust tokenizer counts on all cores, with the counts of the caller's tokenizer, and
    the home's setting (threads off) is back afterwards."""
    import os

    from tasks.core.data.token_lengths import PARALLELISM, count_tokens

    if before is None:
        monkeypatch.delenv(PARALLELISM, raising=False)
    else:
        monkeypatch.setenv(PARALLELISM, before)
    texts = [" ".join(["good"] * n) for n in range(1, 40)]
    counts = count_tokens(tokenizer, texts)
    assert counts.tolist() == [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert os.environ.get(PARALLELISM) == before
