"""/feedback outcomes: one of label, rating, reference, matched to what the version made."""

from __future__ import annotations

import pytest

from tasks.core.errors import RequestRejected
from tasks.core.serving.generate import count_outcome
from tasks.core.serving.schemas import FeedbackItem, PredictionLog, check_feedback_labels
from tasks.core.serving.telemetry import ServiceMetrics, parse_snapshot


def test_an_outcome_is_exactly_one_of_label_rating_reference():
    with pytest.raises(ValueError, match="exactly one of"):
        FeedbackItem(id="a")
    with pytest.raises(ValueError, match="exactly one of"):
        FeedbackItem(id="a", label="positive", rating="good")
    with pytest.raises(ValueError):
        FeedbackItem(id="a", rating="fine")  # good or bad only


def test_outcome_kind_must_match_the_prediction():
    log = PredictionLog(10)
    log.add("c", "1", "positive")
    log.add("g", "2", "the film was good", generated=True)
    labels = {"1": ("negative", "positive")}
    check_feedback_labels([FeedbackItem(id="c", label="negative")], log, labels)
    check_feedback_labels([FeedbackItem(id="g", rating="bad")], log, labels)
    for item, words in (
        (FeedbackItem(id="c", rating="good"), "v1's answer takes 'label'"),
        (FeedbackItem(id="g", label="positive"), "takes 'rating' or 'reference'"),
    ):
        with pytest.raises(RequestRejected, match=words):
            check_feedback_labels([item], log, labels)


def test_reference_outcomes_are_scored_like_evaluation():
    metrics = ServiceMetrics()
    answer = "the  film was good"
    count_outcome(metrics, "2", answer, FeedbackItem(id="a", reference="the film was good"))
    count_outcome(metrics, "2", answer, FeedbackItem(id="b", reference="the film was bad"))
    count_outcome(metrics, "2", answer, FeedbackItem(id="c", rating="bad"))
    figures = parse_snapshot(metrics.render().decode())
    right = figures[("loraflow_feedback_total", (("correct", "true"), ("version", "2")))]
    wrong = figures[("loraflow_feedback_total", (("correct", "false"), ("version", "2")))]
    assert (right, wrong) == (1.0, 2.0)  # whitespace-normalised exact match, as evaluation
    assert figures[("loraflow_feedback_rouge_l_count", (("version", "2"),))] == 2.0
    assert figures[("loraflow_feedback_rouge_l_sum", (("version", "2"),))] == pytest.approx(1.75)
