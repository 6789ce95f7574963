"""Causal-LM scoring on prompt/response pairs: loss, perplexity and a task metric.

Loss is the mean negative log-likelihood of the response tokens given the prompt, encoded
exactly as training encodes them (``sft.encode_pair``), so the figure is comparable to the
training loss; perplexity is its exponential. The task metric (exact match or ROUGE-L, local
``evaluate`` modules) compares greedy generations with the reference responses.
"""

from __future__ import annotations

import time

import torch

from tasks.core.evaluation import metrics as metric_modules
from tasks.core.training.sft import IGNORE, encode_pair, prompt_ids


@torch.inference_mode()
def response_nll(model, tokenizer, prompt: str, response: str, max_length: int):
    """(summed NLL of the response tokens, how many there are) for one pair."""
    pair = encode_pair(tokenizer, prompt, response, max_length)
    ids = torch.tensor([pair["input_ids"]])
    labels = torch.tensor(pair["labels"])
    logits = model(input_ids=ids).logits[0, :-1].float()
    target = labels[1:]
    keep = target != IGNORE
    if not keep.any():
        return 0.0, 0
    nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
    return float(nll), int(keep.sum())


@torch.inference_mode()
def generate(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = torch.tensor([prompt_ids(tokenizer, prompt)])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def score_causal_lm(
    model,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    max_new_tokens: int,
    task_metric: str,
) -> dict[str, float]:
    """loss, perplexity, the task metric, examples and generation latency per example."""
    total, tokens = 0.0, 0
    for prompt, response in zip(prompts, responses, strict=True):
        nll, count = response_nll(model, tokenizer, prompt, response, max_length)
        total, tokens = total + nll, tokens + count
    started = time.perf_counter()
    generated = [generate(model, tokenizer, p, max_new_tokens) for p in prompts]
    seconds = time.perf_counter() - started
    figures = metric_modules.causal_lm(total, tokens, generated, responses, task_metric)
    figures["examples"] = float(len(prompts))
    figures["latency_ms_per_example"] = 1000 * seconds / max(len(prompts), 1)
    return figures
