"""PII and secret detection: each kind found and confirmed, look-alikes left alone, redaction."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.core.config.data import PII_KINDS, PiiSpec
from tasks.core.data.pii import find_pii, redact, scan
from tasks.core.data.prepare import load_prepared, prepare
from tests.unit.data_fixtures import EVAL, TRAIN, fired, spec_for, write_split

FOUND = [
    ("write to jane.doe+films@example.co.uk today", "email", "jane.doe+films@example.co.uk"),
    ("call (415) 555-2671 after six", "phone", "(415) 555-2671"),
    ("ring +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
    ("paid with 4111 1111 1111 1111 twice", "credit_card", "4111 1111 1111 1111"),
    ("card 5500-0000-0000-0004 on file", "credit_card", "5500-0000-0000-0004"),
    ("iban DE89 3704 0044 0532 0130 00 ok", "iban", "DE89 3704 0044 0532 0130 00"),
    ("to GB82WEST12345698765432 now", "iban", "GB82WEST12345698765432"),
    ("host 192.168.10.20 is down", "ip_address", "192.168.10.20"),
    ("v6 2001:db8::8a2e:370:7334 here", "ip_address", "2001:db8::8a2e:370:7334"),
    ("key AKIAIOSFODNN7EXAMPLE leaked", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_" + "a1B2" * 9 + " leaked", "secret", "ghp_" + "a1B2" * 9),
    ("use hf_" + "x" * 34 + " there", "secret", "hf_" + "x" * 34),
    ('api_key = "abcd1234efgh5678"', "secret", 'api_key = "abcd1234efgh5678"'),
    ("-----BEGIN RSA PRIVATE KEY----- MIIE", "secret", "-----BEGIN RSA PRIVATE KEY-----"),
]
LOOK_ALIKES = [
    "the 1999 remake runs 120 minutes , 3.5 stars",
    "card 4111 1111 1111 1112 fails the luhn check",  # Luhn digit off by one
    "iban DE89 3704 0044 0532 0130 01 fails mod 97",  # check digits wrong
    "999.168.1.1 is no address",
    "at 12:30:45 the credits roll",
    "an @ sign alone , or user@localhost",
    "sk-short is no key",
    "12345 people saw it in 2002-2003",
]


@pytest.mark.parametrize(
    ("text", "kind", "value"), FOUND, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(FOUND)]
)
def test_each_kind_is_found_with_its_span(text, kind, value):
    (find,) = find_pii(text, PII_KINDS)
    assert find.kind == kind
    assert text[find.start : find.end] == value
    assert redact(text, [find]) == text.replace(value, f"[{kind.upper()}]")


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_not_pii(text):
    assert find_pii(text, PII_KINDS) == []


def test_only_the_configured_kinds_are_looked_for():
    text = "mail a@b.org or call (415) 555-2671"
    assert [f.kind for f in find_pii(text, PII_KINDS)] == ["email", "phone"]
    assert [f.kind for f in find_pii(text, ("phone",))] == ["phone"]
    assert find_pii(text, ()) == []


def test_overlapping_finds_keep_the_stronger_kind():
    # A card number is also a long digit run a phone matcher might take: only the card counts.
    assert [f.kind for f in find_pii("4111111111111111", PII_KINDS)] == ["credit_card"]


def test_phone_region_decides_national_numbers():
    national = "ring 030 901820 tomorrow"  # a Berlin number, written the German way
    assert find_pii(national, ("phone",), "US") == []
    assert [f.kind for f in find_pii(national, ("phone",), "DE")] == ["phone"]


def test_scan_counts_rows_and_kinds_and_redacts_a_column():
    texts = pd.Series(["clean text", "a@b.org and c@d.org", "fine", "call (415) 555-2671"])
    found = scan(texts, PII_KINDS)
    assert sorted(found.rows) == [1, 3]
    assert dict(found.kinds) == {"email": 2, "phone": 1}
    assert found.redacted(texts).tolist() == [
        "clean text",
        "[EMAIL] and [EMAIL]",
        "fine",
        "call [PHONE]",
    ]


@pytest.mark.parametrize(
    ("policy", "verdict", "saved"),
    [("fail", "fail", False), ("warn", "warn", True), ("redact", "warn", True)],
)
def test_policy_decides_what_a_find_does(tmp_path, policy, verdict, saved):
    rows = [*TRAIN, ("reach me at jane@example.com", 1)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    report = prepare(spec_for(train, eval, pii=PiiSpec(policy=policy)), tmp_path / "out")
    assert fired(report) == {("pii", "train"): verdict}
    (pii,) = [c for c in report.checks if c.check == "pii" and c.split == "train"]
    assert pii.examples == (5,) and pii.stats["kinds"] == {"email": 1}
    assert pii.stats["redacted"] is (policy == "redact")
    assert bool(report.prepared_path) is saved
    if policy == "redact":
        assert "(redacted in place in the prepared data)" in pii.detail
        texts = load_prepared(report.prepared_path)["train"]["text"]
        assert texts[-1] == "reach me at [EMAIL]"
    if policy == "warn":
        assert load_prepared(report.prepared_path)["train"]["text"][-1].endswith("@example.com")


def test_policy_off_does_not_look(tmp_path):
    rows = [*TRAIN, ("reach me at jane@example.com", 1)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    report = prepare(spec_for(train, eval, pii=PiiSpec(policy="off")), tmp_path / "out")
    assert "pii" not in {c.check for c in report.checks} and report.verdict == "pass"


def test_redaction_changes_the_fingerprint(tmp_path):
    rows = [*TRAIN, ("reach me at jane@example.com", 1)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    warned = prepare(spec_for(train, eval, pii=PiiSpec(policy="warn")), tmp_path / "out")
    redacted = prepare(spec_for(train, eval, pii=PiiSpec(policy="redact")), tmp_path / "out")
    assert warned.fingerprint != redacted.fingerprint
