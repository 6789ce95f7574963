"""Canary analysis and decision: pure functions over scrapes of the service's real metrics."""

from __future__ import annotations

import pytest

from tasks.core.config.canary import CanaryAnalysis
from tasks.core.promotion import canary
from tasks.core.serving.telemetry import ServiceMetrics, parse_snapshot

SPEC = CanaryAnalysis(
    min_requests=10,
    min_feedback=10,
    max_error_rate=0.05,
    max_p95_latency_ratio=1.5,
    p95_latency_tolerance_ms=5,
    max_p95_latency_ms=500,
    min_agreement=0.8,
    max_accuracy_drop=0.05,
)
STEPS = (10.0, 50.0, 100.0)


def traffic(
    metrics: ServiceMetrics,
    version: str,
    requests: int,
    latency_ms: float = 10,
    errors: int = 0,
    right: int = 0,
    wrong: int = 0,
    agree: int = 0,
    disagree: int = 0,
    champion: str = "1",
) -> None:
    """Record what a version did, through the same series the service writes."""
    for _ in range(requests):
        metrics.requests.labels(version).inc()
        metrics.latency.labels(version).observe(latency_ms / 1000)
        metrics.predictions.labels(version, "positive").inc()
    if errors:
        metrics.errors.labels(version).inc(errors)
    for correct, count in (("true", right), ("false", wrong)):
        if count:
            metrics.feedback.labels(version, correct).inc(count)
    for same, count in (("true", agree), ("false", disagree)):
        if count:
            metrics.agreement.labels(version, champion, same).inc(count)


def scrape(metrics: ServiceMetrics) -> dict:
    return parse_snapshot(metrics.render().decode())


def step(step_no=1, history=(), **challenger):
    """Analyse one step: champion v1 healthy, challenger v2 as given."""
    metrics = ServiceMetrics()
    traffic(metrics, "1", 5, latency_ms=20)  # before the step: must not count
    before = scrape(metrics)
    champion_requests = 0 if STEPS[step_no - 1] == 100 else 90
    traffic(metrics, "1", champion_requests, latency_ms=20, right=champion_requests)
    args = {"requests": 20, "latency_ms": 20, "right": 20, "agree": 20} | challenger
    traffic(metrics, "2", **args)
    return canary.analyse(step_no, STEPS, before, scrape(metrics), "1", "2", SPEC, list(history))


CASES = [
    pytest.param({}, "continue", [], id="healthy-continues"),
    pytest.param({"errors": 2}, "rollback", ["error_rate"], id="errors"),
    pytest.param({"errors": 1}, "continue", [], id="errors-within-rate"),
    pytest.param({"latency_ms": 60}, "rollback", ["p95_latency_ratio"], id="slow"),
    pytest.param({"latency_ms": 24}, "continue", [], id="slightly-slower-within-tolerance"),
    pytest.param(
        {"latency_ms": 900}, "rollback", ["p95_latency_ratio", "p95_latency_ms"], id="very-slow"
    ),
    pytest.param({"agree": 10, "disagree": 10}, "rollback", ["agreement"], id="disagrees"),
    pytest.param({"agree": 16, "disagree": 4}, "continue", [], id="agreement-at-threshold"),
    pytest.param(
        {"right": 15, "wrong": 5}, "rollback", ["online_accuracy"], id="less-accurate-online"
    ),
    pytest.param({"right": 5, "wrong": 1}, "continue", [], id="too-little-feedback-skips"),
    pytest.param({"requests": 9}, "rollback", ["challenger_requests"], id="too-few-requests"),
    pytest.param(
        {"agree": 0, "disagree": 0}, "continue", [], id="no-shadow-scores-skips-agreement"
    ),
    # Fewer compared texts than min_requests are not judged (a CI run rolled back on 1 of 2).
    pytest.param({"agree": 1, "disagree": 1}, "continue", [], id="two-shadow-scores-skip"),
    pytest.param({"agree": 5, "disagree": 5}, "rollback", ["agreement"], id="ten-are-judged"),
]


@pytest.mark.parametrize(("challenger", "outcome", "failed"), CASES)
def test_step_decision(challenger, outcome, failed):
    analysis = step(**challenger)
    assert analysis.outcome == outcome
    assert [c.name for c in analysis.failed] == failed
    if failed:
        assert analysis.reason.startswith("step 1 (10 %): " + failed[0])


def test_figures_are_differences_between_scrapes():
    analysis = step(errors=1, right=18, wrong=2, agree=19, disagree=1, latency_ms=10)
    ch, champ = analysis.challenger, analysis.champion
    assert (ch.requests, ch.errors, ch.error_rate) == (20, 1, 0.05)
    assert ch.online_accuracy == 0.9 and ch.classes == {"positive": 20}
    assert champ.requests == 90  # the 5 requests before the step are not counted
    assert (analysis.compared, analysis.agreed, analysis.agreement) == (20, 19, 0.95)
    # 10 ms sits in the bucket (7.59, 11.39] ms: interpolation stays inside it.
    assert 7.5 < ch.p95_ms <= 11.4


def test_last_step_promotes_against_the_champion_of_earlier_steps():
    first = step()
    assert first.outcome == "continue"
    last = step(3, history=[first])
    assert last.percent == 100 and last.champion.requests == 0
    assert "champion_requests" not in [c.name for c in last.checks]
    assert last.outcome == "promote" and last.reason.endswith("promoting")
    slow = step(3, history=[first], latency_ms=80)
    assert [c.name for c in slow.failed] == ["p95_latency_ratio"]
    alone = step(3)  # no earlier champion figures: the ratio check cannot be judged
    ratio = next(c for c in alone.checks if c.name == "p95_latency_ratio")
    assert ratio.passed is None and alone.outcome == "promote"


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.95, [], None),
        (0.95, [(1.0, 0.0), (float("inf"), 0.0)], None),
        (0.5, [(1.0, 0.0), (2.0, 10.0), (float("inf"), 10.0)], 1.5),
        (0.95, [(1.0, 10.0), (float("inf"), 10.0)], 0.95),
        (0.95, [(1.0, 5.0), (float("inf"), 10.0)], 1.0),  # beyond the last bound: that bound
        (1.0, [(0.5, 4.0), (1.0, 4.0), (2.0, 8.0), (float("inf"), 8.0)], 2.0),
    ],
)
def test_histogram_quantile(q, buckets, expected):
    assert canary.histogram_quantile(q, buckets) == pytest.approx(expected)


def test_markdown_and_dict_name_every_check():
    analysis = step(agree=2, disagree=18)
    text = canary.to_markdown("m", analysis)
    assert "step 1 at 10 %: **ROLL BACK**" in text
    assert "| agreement | 0.1 | >= 0.8 | FAIL |" in text
    data = analysis.to_dict()
    assert data["agreement"] == 0.1 and data["reason"] == analysis.reason
    assert {c["name"] for c in data["checks"]} >= {"error_rate", "agreement", "online_accuracy"}


def _rouge_step(rouge_sum: float, pairs: int = 20) -> canary.StepAnalysis:
    """A step where every pair of answers differs in exact match; ROUGE-L as given."""
    metrics = ServiceMetrics()
    before = scrape(metrics)
    traffic(metrics, "1", 90, latency_ms=20)
    traffic(metrics, "2", 20, latency_ms=20, disagree=pairs)
    metrics.shadow_rouge_l.labels("2", "1").inc(rouge_sum)
    spec = SPEC.model_copy(update={"agreement_metric": "rouge_l", "min_agreement": 0.5})
    return canary.analyse(1, STEPS, before, scrape(metrics), "1", "2", spec, [])


def test_rouge_l_agreement_judges_generated_answers_by_overlap():
    """Answers that differ word-wise still agree on ROUGE-L; a mean below the floor rolls
    back, and the reason names the quality check."""
    close = _rouge_step(rouge_sum=16.0)  # mean 0.8 although no answer is identical
    assert close.outcome == "continue" and close.agreement == pytest.approx(0.8)
    far = _rouge_step(rouge_sum=4.0)
    assert far.outcome == "rollback" and [c.name for c in far.failed] == ["agreement_rouge_l"]
    assert "agreement_rouge_l = 0.2, needs >= 0.5 (mean ROUGE-L of 20 answers" in far.reason
    exact = step(agree=0, disagree=20)  # the default metric on the same pairs: exact match
    assert [c.name for c in exact.failed] == ["agreement"]
