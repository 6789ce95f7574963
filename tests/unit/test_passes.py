"""Cutting a length-sorted batch into forward passes (``tasks/core/training/passes.py``)."""

from __future__ import annotations

import random

import pytest

from tasks.core.training.passes import CPU_PASS_COST, cheapest_passes, fixed_passes


def cost(lengths, passes, pass_cost):
    return sum(pass_cost + len(p) * lengths[p.stop - 1] for p in passes)


@pytest.mark.parametrize(
    ("lengths", "most", "pass_cost", "expected"),
    [
        ([], 32, 48, []),
        ([12], 32, 48, [(0, 1)]),
        ([20] * 10, 32, 48, [(0, 10)]),  # equal lengths: one pass
        ([20] * 10, 5, 48, [(0, 5), (5, 10)]),  # ... of at most ``most`` texts
        ([20] * 10, 4, 48, [(0, 4), (4, 8), (8, 10)]),  # as fixed passes, full ones first
        ([5] * 8 + [60], 32, 48, [(0, 8), (8, 9)]),  # one long text is padded alone
        ([10, 11, 12, 13], 32, 0, [(0, 1), (1, 2), (2, 3), (3, 4)]),  # free passes: no padding
        ([10, 11, 12, 60], 32, 10_000, [(0, 4)]),  # dear passes: one
    ],
)
def test_cuts(lengths, most, pass_cost, expected):
    passes = cheapest_passes(lengths, most, pass_cost)
    assert [(p.start, p.stop) for p in passes] == expected


def test_cuts_cover_every_text_once_and_never_cost_more_than_fixed_passes():
    rng = random.Random(7)
    for _ in range(200):
        lengths = sorted(rng.randint(3, 128) for _ in range(rng.randint(1, 40)))
        most = rng.randint(1, 32)
        passes = cheapest_passes(lengths, most, CPU_PASS_COST)
        assert [i for p in passes for i in p] == list(range(len(lengths)))
        assert all(1 <= len(p) <= most for p in passes)
        fixed = fixed_passes(len(lengths), most)
        assert cost(lengths, passes, CPU_PASS_COST) <= cost(lengths, fixed, CPU_PASS_COST)


@pytest.mark.parametrize(
    ("lengths", "most", "message"),
    [([3, 2], 4, "sorted"), ([1, 2], 0, "most")],
)
def test_bad_arguments(lengths, most, message):
    with pytest.raises(ValueError, match=message):
        cheapest_passes(lengths, most, 48)


def test_cut_passes_score_as_one_pass_per_text(tiny_model, monkeypatch):
    """Scoring on the CPU cuts a batch into passes; every text's probabilities are the ones it
    gets scored alone (padding is masked), and the passes are fewer than the texts."""
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.core.training import modeling

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model.path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model.path))
    words = tokenizer.convert_ids_to_tokens(list(range(5, 25)))
    rng = random.Random(3)
    texts = [" ".join(rng.choices(words, k=rng.choice([2, 3, 3, 4, 30, 40]))) for _ in range(24)]
    passes = []
    cut = modeling.predict_proba(model, tokenizer, texts, 32, 64, on_batch=passes.append)
    alone = np.concatenate([modeling.predict_proba(model, tokenizer, [t], 1, 64) for t in texts])
    np.testing.assert_allclose(cut, alone, atol=1e-5)
    assert 1 < len(passes) < len(texts)  # short and long texts apart, similar ones together
