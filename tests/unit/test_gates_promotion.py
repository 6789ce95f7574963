"""Registration gates and champion promotion: pure decisions, table-driven."""

from __future__ import annotations

import pytest

from tasks.core import gates, promotion
from tasks.core.config import GateSpec

GATE_CASES = [
    pytest.param({"accuracy": 0.9}, {"accuracy": 0.8}, True, [], id="pass"),
    pytest.param({"accuracy": 0.7}, {"accuracy": 0.8}, False, ["accuracy = 0.7 < 0.8"], id="fail"),
    pytest.param({"accuracy": 0.8}, {"accuracy": 0.8}, True, [], id="boundary-equal-passes"),
    pytest.param({"accuracy": 0.0}, {"accuracy": 0.0}, True, [], id="zero-threshold"),
    pytest.param({"accuracy": 1.0}, {"accuracy": 1.0}, True, [], id="perfect"),
    pytest.param(
        {"accuracy": 0.79999},
        {"accuracy": 0.8},
        False,
        ["accuracy = 0.8 < 0.8"],
        id="just-below-rounded-in-message",
    ),
    pytest.param(
        {"accuracy": 0.9},
        {"accuracy": 0.8, "macro_f1": 0.8},
        False,
        ["macro_f1 = None < 0.8"],
        id="missing-metric-fails",
    ),
    pytest.param({}, {"accuracy": 0.5}, False, ["accuracy = None < 0.5"], id="no-metrics"),
    pytest.param(
        {"accuracy": 0.9, "macro_f1": 0.6},
        {"accuracy": 0.8, "macro_f1": 0.7},
        False,
        ["macro_f1 = 0.6 < 0.7"],
        id="one-of-two-fails",
    ),
    pytest.param(
        {"accuracy": 0.1, "macro_f1": 0.1},
        {"accuracy": 0.8, "macro_f1": 0.7},
        False,
        ["accuracy = 0.1 < 0.8", "macro_f1 = 0.1 < 0.7"],
        id="both-fail",
    ),
    pytest.param({"accuracy": 0.1}, {}, True, [], id="no-gates-passes"),
    pytest.param({}, {}, True, [], id="no-gates-no-metrics-passes"),
    pytest.param(
        {"accuracy": float("nan")},
        {"accuracy": 0.5},
        False,
        ["accuracy = nan < 0.5"],
        id="nan-fails",
    ),
]


@pytest.mark.parametrize(("metrics", "thresholds", "passed", "failures"), GATE_CASES)
def test_gate_decision(metrics, thresholds, passed, failures):
    decision = gates.decide(metrics, GateSpec(absolute=thresholds))
    assert decision.passed is passed
    assert decision.label == ("pass" if passed else "fail")
    assert decision.failures() == failures
    assert [g.metric for g in decision.gates] == sorted(thresholds)
    for gate in decision.gates:
        assert gate.gate == f"min_{gate.metric}"
        assert gate.threshold == thresholds[gate.metric]
        figure = metrics.get(gate.metric)
        assert gate.figure is figure or gate.figure == figure
    data = decision.to_dict()
    assert data["decision"] == decision.label and data["passed"] is passed


def test_gate_markdown():
    decision = gates.decide(
        {"accuracy": 0.81234}, GateSpec(absolute={"accuracy": 0.8, "macro_f1": 0.8})
    )
    text = gates.to_markdown(decision)
    assert text.startswith("## Gate decision: **FAIL**")
    assert "| min_accuracy | 0.8123 | >= 0.8 | pass |" in text
    assert "| min_macro_f1 | (missing) | >= 0.8 | FAIL |" in text
    empty = gates.to_markdown(gates.decide({}, GateSpec()))
    assert "**PASS**" in empty and "(no gates configured)" in empty


PROMOTION_CASES = [
    pytest.param("1", None, "promote", None, "no champion yet: version 1", id="no-champion"),
    pytest.param("3", "3", "noop", "3", "version 3 is already champion", id="same"),
    pytest.param(
        "4",
        "3",
        "keep",
        "3",
        "champion stays at version 3; challenger 4 waits",
        id="other-champion",
    ),
    pytest.param("2", "10", "keep", "10", "challenger 2", id="older-candidate"),
]


@pytest.mark.parametrize(("candidate", "champion", "action", "kept", "reason"), PROMOTION_CASES)
def test_promotion_decision(candidate, champion, action, kept, reason):
    decision = promotion.decide(candidate, champion)
    assert decision.action == action
    assert decision.candidate == candidate
    assert decision.champion == kept
    assert reason in decision.reason
