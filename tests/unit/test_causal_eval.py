"""Causal-LM scoring on the tiny random Llama: loss and perplexity agree, metrics are bounded."""

from __future__ import annotations

import math

import pytest

from tasks.core.evaluation.causal import response_nll, score_causal_lm
from tests.tiny import build_tiny_llama, sft_rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(
        str(folder)
    )


@pytest.mark.parametrize("task_metric", ["exact_match", "rouge_l"])
def test_loss_perplexity_and_task_metric(llama, task_metric):
    model, tokenizer = llama
    rows = sft_rows(6, seed=3)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    figures = score_causal_lm(model, tokenizer, prompts, responses, 32, 3, task_metric)
    assert figures["perplexity"] == pytest.approx(math.exp(figures["loss"]))
    assert figures["loss"] > 0 and 0.0 <= figures[task_metric] <= 1.0
    assert figures["examples"] == 6 and figures["latency_ms_per_example"] > 0
    # The loss is the token-weighted mean of the per-pair response NLL.
    pairs = [
        response_nll(model, tokenizer, p, r, 32) for p, r in zip(prompts, responses, strict=True)
    ]
    assert figures["loss"] == pytest.approx(sum(n for n, _ in pairs) / sum(c for _, c in pairs))


def test_a_response_cut_off_by_max_length_counts_nothing(llama):
    model, tokenizer = llama
    assert response_nll(model, tokenizer, "review : the film was good", "positive", 3) == (0.0, 0)
