"""The live window on its own: it slides, keeps features and outcomes per version, and keeps
text only as a capped, redacted sample when the policy asks."""

from __future__ import annotations

import json

from tasks.core.config.monitoring import LiveSpec
from tasks.core.monitoring.features import Features
from tasks.core.monitoring.window import LiveWindows

LABELS = ("negative", "positive")


def feats(n: int) -> list[Features]:
    return [Features(5 + i, 3, i % 2, (0.1 * i,) * 8) for i in range(n)]


def test_the_window_slides_and_counts_outcomes_per_version():
    windows = LiveWindows(LiveSpec(window=10))
    texts = [f"text number {i}" for i in range(25)]
    results = [(LABELS[i % 2], 0.9) for i in range(25)]
    windows.add("1", LABELS, texts, results, feats(25))
    windows.add("2", LABELS, texts[:3], results[:3], None)  # a model without features
    for correct in (True, False, True):
        windows.outcome("1", correct)
    snapshot = windows.snapshot()
    one, two = snapshot["versions"]["1"], snapshot["versions"]["2"]
    assert one["served_total"] == 25 and one["stats"]["count"] == 10  # the last ten
    assert list(one["stats"]["tokens"]) == [5 + i for i in range(15, 25)]
    assert one["feedback"] == {"count": 3, "correct": 2}
    # A served form without features (a DataFrame pyfunc): nothing counted, those checks skip.
    assert list(two["stats"]["tokens"]) == [0, 0, 0] and two["stats"]["words"] == 0
    assert list(two["stats"]["sketches"]) == []
    assert "text number" not in json.dumps(snapshot)  # no text at all by default
    assert windows.stats("3") is None


def test_samples_are_capped_and_redacted():
    windows = LiveWindows(LiveSpec(window=10, sample_inputs=2))
    texts = ["call +44 20 7946 0958 now", "mail bob@example.org", "key sk-abcdefghijklmnopqrstuvwx"]
    windows.add("1", LABELS, texts, [("positive", 0.8)] * 3, feats(3))
    samples = windows.snapshot()["versions"]["1"]["samples"]
    assert samples == ["mail [EMAIL]", "key [SECRET]"]
