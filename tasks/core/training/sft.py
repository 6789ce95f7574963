"""Supervised fine-tuning data for causal LMs: prompt/response pairs, loss on the response only.

A pair becomes one token sequence. With a chat template (instruction-tuned tokenizers ship
one) the prompt is the user turn and the response the assistant turn, exactly as the model
will see them when served; without one, prompt tokens + response tokens + EOS. Labels copy
the response tokens and set every prompt token to -100, so the loss never rewards the model
for predicting the user's words.
"""

from __future__ import annotations

from datasets import Dataset

from tasks.core.errors import TrainingInputError

PROMPT, RESPONSE = "prompt", "response"
IGNORE = -100


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels of one pair, truncated to ``max_length`` from the right."""
    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": prompt}]
        prompt_ids = list(
            tokenizer.apply_chat_template(
                user, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        full = list(
            tokenizer.apply_chat_template(
                [*user, {"role": "assistant", "content": response}],
                tokenize=True,
                return_dict=False,
            )
        )
        # Some templates render the user turn differently once an answer follows it.
        cut = _common_prefix(prompt_ids, full)
    else:
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer = tokenizer(response, add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        full, cut = prompt_ids + answer + eos, len(prompt_ids)
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

    def encode(row):
        pair = encode_pair(tokenizer, row[PROMPT], row[RESPONSE], max_length)
        return {**pair, "length": len(pair["input_ids"])}

    encoded = data.map(encode, remove_columns=data.column_names)
    kept = encoded.filter(lambda row: any(t != IGNORE for t in row["labels"][1:]))
    if len(kept) == 0:
        raise TrainingInputError(
            f"no response survives truncation to train.max_length={max_length}: raise it"
        )
    return kept
