"""The validation report: one table for Prefect, the CLI and MLflow's JSON and HTML files."""

from __future__ import annotations

import json
import pickle
from html.parser import HTMLParser

import pytest

from tasks.core.data.report import CheckResult, DataReport, examples, failure_message, fired
from tasks.core.errors import DataValidationFailed

REPORT = DataReport(
    fingerprint="",
    label_names=("negative", "positive"),
    rows={"train": 5},
    checks=(
        CheckResult("schema", "train", 0, "0 columns", "pass", "columns ok", (), "columns"),
        CheckResult("pii", "train", 2, "0 rows", "fail", "2 rows hold PII: email 2", (3, 7)),
        CheckResult(
            "duplicates",
            "train",
            0.25,
            "max 0.0% of rows",
            "warn",
            "<b>1</b> & more",
            (4,),
            "share",
        ),
    ),
    prepared_path="",
    tokenizer="org/model@abc",
    max_length=64,
)


class Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.cells.append(data)


def test_table_rows_give_figure_threshold_verdict_and_examples():
    rows = REPORT.table_rows()
    assert [r["check"] for r in rows] == ["schema", "pii", "duplicates"]
    assert rows[1] == {
        "check": "pii",
        "split": "train",
        "figure": "2",
        "threshold": "0 rows",
        "verdict": "fail",
        "examples": "3, 7",
        "detail": "2 rows hold PII: email 2",
    }
    assert rows[2]["figure"] == "25.00%"


def test_verdict_failures_and_message():
    assert REPORT.verdict == "fail"
    assert [c.check for c in REPORT.failed] == ["pii"]
    assert [c.check for c in REPORT.warnings] == ["duplicates"]
    assert failure_message(REPORT) == (
        "data validation failed: pii [train]: 2 rows hold PII: email 2 (rows 3, 7)"
    )
    assert REPORT.summary().startswith("fail: 1 failed, 1 warnings; rows {'train': 5}")


def test_to_dict_is_json_and_keeps_every_field():
    data = json.loads(json.dumps(REPORT.to_dict()))
    assert data["verdict"] == "fail" and data["tokenizer"] == "org/model@abc"
    assert data["checks"][1]["examples"] == [3, 7] and data["checks"][2]["unit"] == "share"


def test_to_html_is_escaped_and_holds_every_row():
    page = REPORT.to_html()
    parser = Cells()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "<b>1</b>" not in page and "&lt;b&gt;1&lt;/b&gt; &amp; more" in page
    assert "<b>1</b> & more" in parser.cells  # shown as text, not markup
    assert parser.tags >= {"html", "table", "tr", "td", "th"}
    for cell in (
        "pii",
        "2 rows hold PII: email 2",
        "3, 7",
        "25.00%",
        "org/model@abc (max_length 64)",
    ):
        assert any(cell in c for c in parser.cells), cell


def test_failure_exception_keeps_the_report_through_pickling():
    exc = DataValidationFailed(failure_message(REPORT), REPORT)
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.report == REPORT
    assert isinstance(again, ValueError)


@pytest.mark.parametrize(
    ("severity", "hit", "verdict"),
    [
        ("fail", True, "fail"),
        ("warn", True, "warn"),
        ("fail", False, "pass"),
        ("off", True, "pass"),
    ],
)
def test_fired(severity, hit, verdict):
    assert fired(severity, hit) == verdict


def test_examples_are_capped_at_five():
    assert examples(range(1, 20)) == (1, 2, 3, 4, 5)
