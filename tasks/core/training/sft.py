"""Supervised fine-tuning data for causal LMs: prompt/response pairs, loss on the response only.

A pair becomes one token sequence. With a chat template (instruction-tuned tokenizers ship
one) the prompt is the user turn and the response the assistant turn, exactly as the model
will see them when served; without one, prompt tokens + response tokens + EOS. Labels copy
the response tokens and set every prompt token to -100, so the loss never rewards the model
for predicting the user's words.
"""

from __future__ import annotations

import json

from datasets import Dataset

from tasks.core.data.chat import plain_prompt, prompt_turns
from tasks.core.errors import TrainingInputError

PROMPT, RESPONSE, MESSAGES = "prompt", "response", "messages"
IGNORE = -100


def prompt_ids(tokenizer, prompt: str | list[dict] | tuple[dict, ...]) -> list[int]:
    """Token ids the model answers from: the template's generation prompt, or plain text."""
    if getattr(tokenizer, "chat_template", None):
        return list(
            tokenizer.apply_chat_template(
                prompt_turns(prompt), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    return tokenizer(plain_prompt(prompt))["input_ids"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_pair(
    tokenizer, prompt: str | list[dict], response: str, max_length: int
) -> dict[str, list[int]]:
    """input_ids and labels of one pair, truncated to ``max_length`` from the right.

    ``prompt`` is a user message or the chat turns before the answer (system, user, ...);
    the loss falls on the final assistant answer only.
    """
    asked = prompt_ids(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        full = list(
            tokenizer.apply_chat_template(
                [*prompt_turns(prompt), {"role": "assistant", "content": response}],
                tokenize=True,
                return_dict=False,
            )
        )
        # Some templates render the user turn differently once an answer follows it.
        cut = _common_prefix(asked, full)
    else:
        answer = tokenizer(response, add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        full, cut = asked + answer + eos, len(asked)
    full = full[:max_length]
    labels = [IGNORE] * min(cut, len(full)) + full[cut:]
    return {"input_ids": full, "labels": labels}


def tokenize_sft(data: Dataset, tokenizer, max_length: int) -> Dataset:
    """Tokenized pairs with a ``length`` column; pairs whose response is cut off entirely go."""
    missing = [c for c in (PROMPT, RESPONSE) if c not in data.column_names]
    if missing:
        raise TrainingInputError(
            f"causal-lm training needs columns {PROMPT!r} and {RESPONSE!r}; the prepared data "
            f"has {data.column_names} (missing {missing})"
        )

    chat = MESSAGES in data.column_names  # prepared generative data: the prompt's turns

    def encode(row):
        prompt = json.loads(row[MESSAGES]) if chat else row[PROMPT]
        pair = encode_pair(tokenizer, prompt, row[RESPONSE], max_length)
        return {**pair, "length": len(pair["input_ids"])}

    encoded = data.map(encode, remove_columns=data.column_names)
    kept = encoded.filter(lambda row: any(t != IGNORE for t in row["labels"][1:]))
    if len(kept) == 0:
        raise TrainingInputError(
            f"no response survives truncation to train.max_length={max_length}: raise it"
        )
    return kept
