"""Data that a user really has (issue 14): one headerless file with string labels, split into
train and eval, repeats dropped, raw labels mapped, UK phone numbers, files that are broken
in the ways real files are; and the preprocessing the registered model repeats at serving."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.core.config.data import DataSpec, PiiSpec, SplitFraction, SplitSpec
from tasks.core.data.pii import find_pii, scan
from tasks.core.data.prepare import load_prepared, prepare
from tasks.core.data.preprocess import Preprocessing
from tasks.core.errors import DataError
from tests.sms import UK_INTERNATIONAL, UK_NATIONAL, write_sms
from tests.unit.data_fixtures import EVAL, TRAIN, spec_for, write_split

LABELS = ("legit", "spam")


def sms_spec(path, **overrides) -> DataSpec:
    """The one-file SMS layout: headerless, label first, split 25 % to eval, PII redacted."""
    fields = {
        "name": "sms",
        "labels": LABELS,
        "label_map": {"ham": "legit"},
        "train": SplitSpec(
            path=path, header=False, column_names=("label", "text"), text_column="text",
            label_column="label",
        ),
        "split": SplitFraction(eval_fraction=0.25, seed=3),
        "pii": PiiSpec(policy="redact"),
    }  # fmt: skip
    return DataSpec(**(fields | overrides))


def check(report, name: str, split: str = "train"):
    (found,) = [c for c in report.checks if c.check == name and c.split == split]
    return found


def test_one_file_splits_seeded_stratified_with_repeats_on_one_side(tmp_path):
    path = write_sms(tmp_path / "sms.tsv", count=400, duplicates=30)
    report = prepare(sms_spec(path), tmp_path / "out")
    assert report.verdict == "pass", report.failed
    data = load_prepared(report.prepared_path)
    train, eval = data["train"].to_pandas(), data["eval"].to_pandas()
    assert 0.22 < len(eval) / (len(train) + len(eval)) < 0.28
    assert abs(train["label"].mean() - eval["label"].mean()) < 0.04  # spam share kept
    assert not set(eval["text"]) & set(train["text"])  # no repeat crosses the split
    assert check(report, "leakage", "eval").figure == 0
    assert "25.0%" in check(report, "split", "eval").threshold
    again = prepare(sms_spec(path), tmp_path / "again")
    other = prepare(sms_spec(path, split=SplitFraction(eval_fraction=0.25, seed=4)), tmp_path / "o")
    assert again.fingerprint == report.fingerprint != other.fingerprint


def test_split_or_eval_file_one_of_them():
    with pytest.raises(ValidationError, match="exactly one of 'eval'"):
        DataSpec(
            name="x",
            labels=LABELS,
            train=SplitSpec(path=__file__, format="csv", text_column="t", label_column="l"),
        )


def test_dedupe_drops_repeats_and_counts_them_in_the_report(tmp_path):
    rows = [*TRAIN, TRAIN[0], TRAIN[1], ("A DULL, lifeless film!", 0)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    exact = prepare(spec_for(train, eval, dedupe="exact"), tmp_path / "a")
    assert check(exact, "dedupe").figure == 2 and check(exact, "dedupe").examples == (5, 6)
    assert exact.rows["train"] == 5 and check(exact, "duplicates").figure == 0
    normalized = prepare(spec_for(train, eval, dedupe="normalized"), tmp_path / "b")
    assert check(normalized, "dedupe").figure == 3 and normalized.rows["train"] == 4
    kept = prepare(spec_for(train, eval), tmp_path / "c")
    assert kept.rows["train"] == 7 and not [c for c in kept.checks if c.check == "dedupe"]


def test_label_map_turns_raw_labels_into_class_names(tmp_path):
    train = write_split(tmp_path / "train.tsv", [(t, ["bad", "good"][y]) for t, y in TRAIN])
    eval = write_split(tmp_path / "eval.tsv", [(t, ["bad", "good"][y]) for t, y in EVAL])
    mapped = spec_for(train, eval, label_map={"bad": "negative", "good": "positive"})
    report = prepare(mapped, tmp_path / "out")
    assert report.verdict == "pass"
    assert load_prepared(report.prepared_path)["train"]["label"] == [y for _, y in TRAIN]
    with pytest.raises(ValidationError, match="allowed: negative, positive"):
        spec_for(train, eval, label_map={"bad": "negativ"})
    assert spec_for(train, eval, label_map={0: "negative"}).label_map == {"0": "negative"}


def test_max_samples_keeps_each_class_share(tmp_path):
    rows = [(f"film number {i} was {'good' if i % 5 == 0 else 'bad'}", int(i % 5 == 0))
            for i in range(100)]  # fmt: skip
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    report = prepare(spec_for(train, eval, max_samples=10), tmp_path / "out")
    labels = load_prepared(report.prepared_path)["train"]["label"]
    assert len(labels) == 10 and sum(labels) == 2  # 20 % positive, as in the file


UNREADABLE = [
    ("empty.tsv", b"", "the file is empty (0 bytes)"),
    ("header.tsv", b"label\ttext\n", "holds a header line ('label\\ttext') but no data rows"),
    ("latin1.tsv", "label\ttext\n1\tcaf\xe9 ok\n".encode("latin-1"), "byte 0xe9 at offset 16 (line 2)"),
    ("comma.tsv", b"label,text\n1,good\n0,bad\n", "looks like CSV (commas, no tabs): set format: csv"),
    ("tabs.csv", b"label\ttext\n1\tgood\n", "looks like TSV (tabs, no commas): set format: tsv"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "expected"), UNREADABLE, ids=lambda v: str(v)[:12])
def test_an_unreadable_file_is_named_with_its_cause(tmp_path, name, content, expected):
    bad = tmp_path / name
    bad.write_bytes(content)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    with pytest.raises(DataError) as error:
        prepare(spec_for(bad, eval), tmp_path / "out")
    assert str(error.value).startswith(f"{bad}: ") and expected in str(error.value)
    assert "error occurred while generating" not in str(error.value)


def test_uk_numbers_are_found_by_default_and_a_missing_region_is_reported():
    texts = pd.Series([f"call {n} now" for n in UK_NATIONAL + UK_INTERNATIONAL])
    assert len(scan(texts, ("phone",)).rows) == len(texts)  # the default regions
    us_only = scan(texts, ("phone",), ("US",))
    assert len(us_only.rows) == len(UK_INTERNATIONAL)  # +44 needs no region
    assert len(us_only.unconfirmed_phones) == len(UK_NATIONAL)


def test_pii_report_says_how_to_go_on_and_which_region_is_missing(tmp_path):
    rows = [*TRAIN, ("call 07712 345678 tonight", 1)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    failed = prepare(spec_for(train, eval), tmp_path / "a")
    line = check(failed, "pii").line()
    assert (
        check(failed, "pii").verdict == "fail"
        and "(rows 5); to go on: data.pii.policy: redact" in line
    )
    us = prepare(spec_for(train, eval, pii=PiiSpec(phone_regions=("US",))), tmp_path / "b")
    assert check(us, "pii").verdict == "warn" and "add their region to phone_regions" in (
        check(us, "pii").detail
    )
    assert PiiSpec.model_validate({"phone_region": "GB"}).phone_regions == ("GB",)


def test_a_sentence_running_on_after_an_address_like_word_is_no_email():
    assert find_pii("txt msg+ticket@kiosk.Valid 12hrs only", ("email",)) == []
    assert [f.kind for f in find_pii("mail jo@kiosk.co.uk", ("email",))] == ["email"]


def test_preprocessing_is_what_the_data_stage_did_and_is_idempotent(tmp_path):
    path = write_sms(tmp_path / "sms.tsv", count=200)
    spec = sms_spec(
        path,
        normalize={"lowercase": True, "collapse_whitespace": True, "unicode_form": "NFKC"},
    )
    report = prepare(spec, tmp_path / "out")
    preprocessing = Preprocessing.from_dict(report.preprocessing)
    assert preprocessing.redact and preprocessing.lowercase
    raw = pd.read_csv(path, sep="\t", header=None, names=["label", "text"])["text"].tolist()
    prepared = load_prepared(report.prepared_path)
    prepared_texts = set(prepared["train"]["text"]) | set(prepared["eval"]["text"])
    applied = preprocessing.apply(raw)
    assert set(applied) == prepared_texts  # the data stage and serving: one code path
    assert preprocessing.apply(applied) == applied  # prepared texts pass through unchanged
    assert any("[PHONE]" in t for t in applied) and any("[EMAIL]" in t for t in applied)
    assert not any(n in t for t in applied for n in UK_NATIONAL + UK_INTERNATIONAL)
