"""The monitor's checks on synthetic statistics: no false alarm on in-distribution windows,
each kind of shift found with its figure, staleness and accuracy decay, the report's shape."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.config.loader import load_monitoring_policy
from tasks.core.home import MONITORING_POLICY
from tasks.core.monitoring.drift import BREACH, DRIFT, PASS, SKIP, STALE, Feedback, monitor
from tasks.core.monitoring.features import Features, vocabulary
from tasks.core.monitoring.profile import ReferenceProfile, build_profile, stats_of

LABELS = ("negative", "positive")
POLICY = load_monitoring_policy(MONITORING_POLICY)
WORDS = [f"w{i}" for i in range(200)]


def population(rng, n, shift=0.0, length=12, positive=0.5, unseen=0.0):
    """(probs, features, texts) of ``n`` synthetic inputs."""
    p_pos = np.clip(rng.normal(0.5 + (positive - 0.5) * 1.6, 0.3, n), 0.01, 0.99)
    probs = np.stack([1 - p_pos, p_pos], axis=1)
    feats, texts = [], []
    for _ in range(n):
        k = max(1, int(rng.poisson(length)))
        words = [
            f"new{rng.integers(1000)}" if rng.random() < unseen else str(rng.choice(WORDS))
            for _ in range(k)
        ]
        texts.append(" ".join(words))
        oov = sum(w.startswith("new") for w in words)
        sketch = tuple(float(v) for v in rng.normal(shift, 1.0, 8))
        feats.append(Features(k + 2, k, oov, sketch))
    return probs, feats, texts


def reference(seed=0, n=800) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    probs, feats, texts = population(rng, n)
    vocab = vocabulary(" ".join(WORDS).split())
    return build_profile(list(LABELS), probs, feats, vocab, accuracy=0.9)


def live(seed, n=300, **shift):
    rng = np.random.default_rng(seed)
    probs, feats, _ = population(rng, n, **shift)
    best = probs.argmax(1)
    return stats_of(LABELS, [LABELS[i] for i in best], probs.max(1).tolist(), feats, n, n)


def verdicts(report):
    return {f.check: f.verdict for f in report.findings}


def test_in_distribution_windows_raise_no_alarm():
    ref = reference()
    for seed in range(1, 21):  # twenty windows: no false alarm on any
        report = monitor("m", "1", ref, live(seed), Feedback(100, 90), 1.0, POLICY)
        assert report.outcome == "ok", report.reason()
        assert report.events() == []


@pytest.mark.parametrize(
    ("shift", "check"),
    [
        ({"length": 40}, "input_length"),
        ({"unseen": 0.5}, "oov_rate"),
        ({"shift": 1.5}, "embedding"),
        ({"positive": 0.95}, "prediction_shift"),
    ],
)
def test_each_shift_is_found_with_its_figure(shift, check):
    report = monitor("m", "1", reference(), live(7, **shift), Feedback(0, 0), 1.0, POLICY)
    finding = {f.check: f for f in report.findings}[check]
    assert finding.verdict == BREACH, report.reason()
    assert finding.figure > finding.threshold
    assert finding.event == DRIFT
    assert report.events() == [DRIFT]


def test_accuracy_decay_staleness_and_small_windows():
    ref = reference()
    report = monitor("m", "1", ref, live(3, n=50), Feedback(100, 60), 45.0, POLICY)
    found = {f.check: f for f in report.findings}
    assert found["online_accuracy"].verdict == BREACH
    assert found["online_accuracy"].figure == pytest.approx(0.3)
    assert found["staleness"].verdict == BREACH and found["staleness"].event == STALE
    assert found["embedding"].verdict == SKIP  # 50 inputs < min_window
    assert report.events() == [DRIFT, STALE]
    assert "| online_accuracy | breach | 0.3000 | 0.1 |" in report.to_markdown()
    quiet = monitor("m", "1", ref, None, Feedback(5, 0), 2.0, POLICY)
    assert verdicts(quiet)["online_accuracy"] == SKIP and verdicts(quiet)["staleness"] == PASS
    assert monitor("m", "1", None, None, Feedback(0, 0), None, POLICY).findings[0].verdict == SKIP


def test_profile_round_trips_and_stays_small():
    ref = reference()
    again = ReferenceProfile.from_dict(ref.to_dict())
    assert again == ref
    assert len(ref.stats.sketches) <= 512 and len(ref.stats.confidence) <= 1000
    assert ref.stats.oov_rate == 0.0


def test_confidence_noise_from_another_precision_is_not_drift():
    """An untrained head scores everything at 0.507 +- 0.001: the served form's fp32 scores and
    the evaluation's bf16 ones differ by thousandths, a 'significant' KS statistic on so narrow
    a distribution, yet no drift. The same narrow reference against confidences moved by
    points still breaches."""
    from tasks.core.monitoring.drift import _ks

    rng = np.random.default_rng(3)
    fp32 = 0.507 + rng.normal(0, 0.0005, 800)
    bf16 = np.round((0.507 + rng.normal(0, 0.0005, 200)) * 256) / 256  # a coarser grid
    noise = _ks("confidence", fp32, bf16, POLICY, "confidence", 0.005)
    assert noise.verdict == PASS and noise.figure > POLICY.drift.max_ks, noise.detail
    assert "within numeric noise" in noise.detail
    moved = _ks("confidence", fp32, bf16 + 0.05, POLICY, "confidence", 0.005)
    assert moved.verdict == BREACH and moved.event == DRIFT
