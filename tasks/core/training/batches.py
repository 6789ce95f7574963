"""Batches that never pad to ``max_length``: length-grouped order, dynamic padding, packing.

The batch order of an epoch is a pure function of (seed, epoch), so a resumed run recomputes
exactly the batches it had left and skips the ones it already trained on: the data position
in a checkpoint is just (epoch, micro-batches consumed). Collation uses the transformers
collators: ``DataCollatorWithPadding`` pads a classification batch to its longest example,
``DataCollatorWithFlattening`` packs a causal-LM batch into one row without padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    DataCollatorWithPadding,
)

from tasks.core.training.modeling import CAUSAL_LM

# Examples sorted together: big enough that neighbours in a batch have nearly equal length,
# small enough that batches still mix the epoch (Trainer's LengthGroupedSampler uses 50).
GROUP_BATCHES = 64


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
) -> list[list[int]]:
    """Index lists of one epoch, in training order; the same arguments give the same batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    sizes = np.asarray(lengths)
    batches: list[np.ndarray] = []
    chunk = batch_size * GROUP_BATCHES
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(-sizes[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i].tolist() for i in rng.permutation(len(batches))]


def make_collator(task: str, tokenizer, packing: bool) -> Callable[[list[dict]], dict]:
    if task != CAUSAL_LM:
        return DataCollatorWithPadding(tokenizer, return_tensors="pt")
    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def rows(data, indices: list[int]) -> list[dict]:
    """Examples as dicts, read from the Arrow table in one take rather than row by row."""
    columns = data[indices]
    return [{k: columns[k][j] for k in columns} for j in range(len(indices))]


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in a collated batch."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry a causal-LM loss (labels shifted by one, -100 ignored)."""
    return int((batch["labels"][..., 1:] != -100).sum())
