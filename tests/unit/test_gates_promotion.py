"""Registration gates and champion promotion: pure decisions, table-driven.

Gate tables cover each kind of gate on its own (absolute minimums and maximums,
non-inferiority with and without a champion, gain over the base model, golden examples,
slices) over hand-built evaluation reports; the gates not under test are switched off.
"""

from __future__ import annotations

import json

import pytest

from tasks.core.config.evaluation import GateSpec
from tasks.core.evaluation import gates
from tasks.core.evaluation.report import EvalReport, GoldenCase, ModelScores, SliceFigure
from tasks.core.promotion import decision as promotion

OFF = {"non_inferiority": {"metrics": []}, "base_model": {"score": False}}


def spec(**sections) -> GateSpec:
    return GateSpec.model_validate(OFF | sections)


def report(candidate: dict, champion: dict | None = None, version=None, note="", **extra):
    return EvalReport(
        labels=("negative", "positive"),
        candidate=ModelScores("candidate", "run-2", candidate),
        champion=ModelScores("champion", "models:/m/1", champion) if champion is not None else None,
        champion_version=version,
        champion_note=note,
        **extra,
    )


ABSOLUTE_CASES = [
    pytest.param({"accuracy": 0.9}, {"accuracy": 0.8}, {}, True, [], id="pass"),
    pytest.param(
        {"accuracy": 0.7},
        {"accuracy": 0.8},
        {},
        False,
        ["min_accuracy: accuracy = 0.7 < 0.8"],
        id="fail",
    ),
    pytest.param({"accuracy": 0.8}, {"accuracy": 0.8}, {}, True, [], id="boundary-equal-passes"),
    pytest.param({"accuracy": 0.0}, {"accuracy": 0.0}, {}, True, [], id="zero-threshold"),
    pytest.param(
        {"accuracy": 0.79999},
        {"accuracy": 0.8},
        {},
        False,
        ["min_accuracy: accuracy = 0.8 < 0.8"],
        id="just-below-rounded-in-message",
    ),
    pytest.param(
        {"accuracy": 0.9},
        {"accuracy": 0.8, "macro_f1": 0.8},
        {},
        False,
        ["min_macro_f1: macro_f1 = None < 0.8"],
        id="missing-metric-fails",
    ),
    pytest.param(
        {"accuracy": 0.1, "macro_f1": 0.1},
        {"accuracy": 0.8, "macro_f1": 0.7},
        {},
        False,
        ["min_accuracy: accuracy = 0.1 < 0.8", "min_macro_f1: macro_f1 = 0.1 < 0.7"],
        id="both-fail",
    ),
    pytest.param(
        {"accuracy": float("nan")},
        {"accuracy": 0.5},
        {},
        False,
        ["min_accuracy: accuracy = nan < 0.5"],
        id="nan-fails",
    ),
    pytest.param(
        {"recall_negative": 0.6},
        {"recall_negative": 0.7},
        {},
        False,
        ["min_recall_negative: recall_negative = 0.6 < 0.7"],
        id="per-class-minimum",
    ),
    pytest.param({"ece": 0.05}, {}, {"ece": 0.1}, True, [], id="ceiling-pass"),
    pytest.param({"ece": 0.1}, {}, {"ece": 0.1}, True, [], id="ceiling-boundary-passes"),
    pytest.param(
        {"ece": 0.2}, {}, {"ece": 0.1}, False, ["max_ece: ece = 0.2 > 0.1"], id="ceiling-fail"
    ),
    pytest.param(
        {"accuracy": 0.9},
        {},
        {"latency_ms_per_example": 5.0},
        False,
        ["max_latency_ms_per_example: latency_ms_per_example = None > 5.0"],
        id="ceiling-missing-fails",
    ),
    pytest.param({"accuracy": 0.1}, {}, {}, True, [], id="no-gates-passes"),
    pytest.param({}, {}, {}, True, [], id="no-gates-no-metrics-passes"),
]


@pytest.mark.parametrize(("metrics", "minimum", "maximum", "passed", "failures"), ABSOLUTE_CASES)
def test_absolute_gates(metrics, minimum, maximum, passed, failures):
    decision = gates.decide_gates(report(metrics), spec(absolute=minimum, maximum=maximum))
    assert decision.passed is passed
    assert decision.label == ("pass" if passed else "fail")
    assert decision.failures() == failures
    expected = [f"min_{m}" for m in sorted(minimum)] + [f"max_{m}" for m in sorted(maximum)]
    assert [g.gate for g in decision.gates] == expected
    for gate in decision.gates:
        bounds = minimum if gate.op == ">=" else maximum
        assert gate.threshold == bounds[gate.metric]
    data = json.loads(json.dumps(decision.to_dict()))  # the record logged to MLflow
    assert data["decision"] == decision.label and data["passed"] is passed
    assert [row["passed"] for row in data["gates"]] == [g.passed for g in decision.gates]


CANDIDATE = {"accuracy": 0.85, "macro_f1": 0.84}
NON_INFERIORITY_CASES = [
    pytest.param(None, None, "", 0.01, ["skip", "skip"], [], id="no-champion-skips"),
    pytest.param(
        {"accuracy": 0.85, "macro_f1": 0.84}, "1", "", 0.01, ["pass", "pass"], [], id="equal"
    ),
    pytest.param(
        {"accuracy": 0.86, "macro_f1": 0.845},
        "1",
        "",
        0.01,
        ["pass", "pass"],
        [],
        id="worse-within-margin",
    ),
    pytest.param(
        {"accuracy": 0.90, "macro_f1": 0.84},
        "1",
        "",
        0.05,
        ["pass", "pass"],
        [],
        id="exactly-at-margin-passes",
    ),
    pytest.param(
        {"accuracy": 0.90, "macro_f1": 0.80},
        "3",
        "",
        0.01,
        ["fail", "pass"],
        ["non_inferiority_accuracy: accuracy = 0.85 < 0.89 (champion v3 0.9000 - margin 0.01)"],
        id="worse-beyond-margin-fails",
    ),
    pytest.param(
        {"macro_f1": 0.80},
        "1",
        "",
        0.01,
        ["fail", "pass"],
        ["non_inferiority_accuracy: accuracy = 0.85 < None (champion v1 None - margin 0.01)"],
        id="champion-figure-missing-fails",
    ),
    pytest.param(
        None,
        "2",
        "champion v2 predicts other classes: not comparable",
        0.01,
        ["fail", "fail"],
        [
            "non_inferiority_accuracy: accuracy = 0.85 < None (champion v2 predicts other "
            "classes: not comparable)",
            "non_inferiority_macro_f1: macro_f1 = 0.84 < None (champion v2 predicts other "
            "classes: not comparable)",
        ],
        id="incomparable-champion-fails",
    ),
]


@pytest.mark.parametrize(
    ("champion", "version", "note", "margin", "statuses", "failures"), NON_INFERIORITY_CASES
)
def test_non_inferiority(champion, version, note, margin, statuses, failures):
    rule = {"metrics": ["accuracy", "macro_f1"], "margin": margin}
    decision = gates.decide_gates(
        report(CANDIDATE, champion, version, note), spec(non_inferiority=rule)
    )
    assert [g.gate for g in decision.gates] == [
        "non_inferiority_accuracy",
        "non_inferiority_macro_f1",
    ]
    assert [g.status for g in decision.gates] == statuses
    assert decision.failures() == failures
    assert decision.passed is (not failures)
    if champion and all(m in champion for m in ("accuracy", "macro_f1")):
        assert [g.threshold for g in decision.gates] == [
            pytest.approx(champion[m] - margin) for m in ("accuracy", "macro_f1")
        ]


def test_non_inferiority_switched_off_ignores_a_worse_candidate():
    decision = gates.decide_gates(report(CANDIDATE, {"accuracy": 0.99}, "1"), spec())
    assert decision.passed and decision.gates == ()


BASE_CASES = [
    pytest.param(None, {"accuracy": 0.5}, [], True, id="recorded-not-gated"),
    pytest.param(0.2, {"accuracy": 0.6}, ["pass"], True, id="gain-reached"),
    pytest.param(0.2, {"accuracy": 0.7}, ["fail"], False, id="gain-missed"),
    pytest.param(0.2, None, ["fail"], False, id="base-not-scored-fails"),
]


@pytest.mark.parametrize(("min_gain", "base", "statuses", "passed"), BASE_CASES)
def test_base_model_gain(min_gain, base, statuses, passed):
    scores = ModelScores("base", "org/base@abc", base) if base is not None else None
    rule = {"score": True, "min_gain": min_gain}
    decision = gates.decide_gates(report(CANDIDATE, base=scores), spec(base_model=rule))
    assert [g.status for g in decision.gates] == statuses
    assert decision.passed is passed
    if statuses:
        assert decision.gates[0].gate == "base_gain_accuracy"


def case(line, expected, new, old=None):
    scores = {"old_label": old, "old_score": 0.7} if old else {}
    return GoldenCase(line, f"text {line}", expected, new, 0.9, **scores)


GOLDEN_CASES = [
    pytest.param(
        [case(1, "positive", "positive"), case(2, "negative", "negative")],
        1.0,
        "pass",
        1.0,
        0,
        id="all-right-no-champion",
    ),
    pytest.param(
        [
            case(1, "positive", "positive", old="positive"),
            case(2, "negative", "positive", old="negative"),
        ],
        1.0,
        "fail",
        0.5,
        1,
        id="one-regressed-vs-champion",
    ),
    pytest.param(
        [
            case(1, "positive", "positive", old="negative"),
            case(2, "negative", "positive", old="positive"),
        ],
        0.5,
        "pass",
        0.5,
        1,
        id="fixed-one-rate-allows-a-miss",
    ),
    pytest.param(
        [case(1, "positive", "negative", old="negative")],
        1.0,
        "fail",
        0.0,
        0,
        id="wrong-but-unchanged",
    ),
]


@pytest.mark.parametrize(("cases", "min_rate", "status", "figure", "changed"), GOLDEN_CASES)
def test_golden_examples(tmp_path, cases, min_rate, status, figure, changed):
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"text": "x", "label": "positive"}\n')
    rep = report(CANDIDATE, golden=tuple(cases))
    decision = gates.decide_gates(
        rep, spec(golden={"path": str(golden), "min_pass_rate": min_rate})
    )
    (gate,) = decision.gates
    assert (gate.gate, gate.status, gate.figure, gate.threshold) == (
        "golden",
        status,
        figure,
        min_rate,
    )
    assert f"{changed} changed vs champion" in gate.detail
    wrong = [str(c.line) for c in cases if not c.passed]
    if wrong:
        assert f"(lines {', '.join(wrong)})" in gate.detail
    # The report lists each case that changed, old vs new output.
    markdown = gates.to_markdown(decision, rep)
    assert f"### Golden examples: {changed} changed vs champion" in markdown
    for c in rep.golden_changes():
        assert (
            f"| {c.line} | {c.text} | {c.expected} | {c.old_label} (0.70) | {c.new_label} (0.90) |"
            in markdown
        )


SLICE_RULES = [
    {"name": "length", "length_buckets": [10], "minimum": 0.7, "min_examples": 30},
    {"name": "label", "column": "label", "minimum": 0.6, "min_examples": 1},
]
SLICE_CASES = [
    pytest.param(
        [
            ("length", "<10", 100, 0.8),
            ("length", ">=10", 40, 0.75),
            ("label", "0", 70, 0.9),
            ("label", "1", 70, 0.7),
        ],
        {
            "slice_length_lt10": "pass",
            "slice_length_ge10": "pass",
            "slice_label_0": "pass",
            "slice_label_1": "pass",
        },
        id="all-above-minimum",
    ),
    pytest.param(
        [
            ("length", "<10", 100, 0.8),
            ("length", ">=10", 40, 0.65),
            ("label", "0", 70, 0.9),
            ("label", "1", 70, 0.5),
        ],
        {
            "slice_length_lt10": "pass",
            "slice_length_ge10": "fail",
            "slice_label_0": "pass",
            "slice_label_1": "fail",
        },
        id="two-slices-fail",
    ),
    pytest.param(
        [
            ("length", "<10", 130, 0.8),
            ("length", ">=10", 10, 0.1),
            ("label", "0", 70, 0.9),
            ("label", "1", 70, 0.7),
        ],
        {
            "slice_length_lt10": "pass",
            "slice_length_ge10": "skip",
            "slice_label_0": "pass",
            "slice_label_1": "pass",
        },
        id="small-slice-reported-not-gated",
    ),
    pytest.param(
        [("length", "<10", 140, 0.8)],
        {"slice_length_lt10": "pass", "slice_label": "fail"},
        id="slice-not-computed-fails",
    ),
]


@pytest.mark.parametrize(("figures", "expected"), SLICE_CASES)
def test_slice_minimums(figures, expected):
    slices = tuple(SliceFigure(name, bucket, "accuracy", n, f) for name, bucket, n, f in figures)
    decision = gates.decide_gates(report(CANDIDATE, slices=slices), spec(slices=SLICE_RULES))
    assert {g.gate: g.status for g in decision.gates} == expected
    assert decision.passed is ("fail" not in expected.values())
    for gate in decision.gates:
        if gate.status == "fail" and gate.figure is not None:
            assert gate.failure().startswith(f"{gate.gate}: accuracy = {gate.figure} < ")


def test_every_gate_in_fixed_order_with_policy_version(tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"text": "x", "label": 1}\n')
    rules = spec(
        absolute={"accuracy": 0.8},
        maximum={"ece": 0.2},
        non_inferiority={"metrics": ["accuracy"], "margin": 0.01},
        base_model={"score": True, "min_gain": 0.1},
        golden={"path": str(golden)},
        slices=[SLICE_RULES[1]],
    )
    rep = report(
        {"accuracy": 0.85, "ece": 0.05},
        {"accuracy": 0.84},
        "1",
        base=ModelScores("base", "org/base@abc", {"accuracy": 0.5}),
        golden=(case(1, "positive", "positive", old="positive"),),
        slices=(SliceFigure("label", "0", "accuracy", 50, 0.9),),
    )
    decision = gates.decide_gates(rep, rules, policy_version="2026.11-1")
    assert [g.gate for g in decision.gates] == [
        "min_accuracy",
        "max_ece",
        "non_inferiority_accuracy",
        "base_gain_accuracy",
        "golden",
        "slice_label_0",
    ]
    assert decision.passed and decision.to_dict()["policy_version"] == "2026.11-1"


def test_gate_markdown():
    rep = report({"accuracy": 0.81234}, {"accuracy": 0.9}, "1")
    decision = gates.decide_gates(rep, spec(absolute={"accuracy": 0.8, "macro_f1": 0.8}))
    text = gates.to_markdown(decision, rep)
    assert text.startswith("## Gate decision: **FAIL**")
    assert "| min_accuracy | 0.8123 | >= 0.8 | pass |  |" in text
    assert "| min_macro_f1 | (missing) | >= 0.8 | FAIL |  |" in text
    assert (
        "| candidate | `run-2` | 0.8123 |" in text
        and "| champion | `models:/m/1` | 0.9000 |" in text
    )
    empty = gates.to_markdown(gates.decide_gates(report({}), spec()))
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
    decision = promotion.decide_promotion(candidate, champion)
    assert decision.action == action
    assert decision.candidate == candidate
    assert decision.champion == kept
    assert reason in decision.reason
