"""What a training process sets up before its loop: precision, accelerator, model, data.

The precision (``precision.resolve``: bf16 autocast on a GPU or a CPU with a native bf16 unit,
int8 matmuls through the frozen base on request) decides how the base loads (bf16
weights for a frozen base on a bf16 GPU; fp32 on a CPU, with bf16 or int8 copies of its frozen
Linears) and how the loop runs (autocast), so both are decided here, from the same
``TrainSpec``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.errors import TrainingInputError
from tasks.core.training.modeling import (
    CAUSAL_LM,
    ModelRef,
    add_lora,
    infer_target_modules,
    load_base,
    load_causal_lm,
    quantization_config,
)
from tasks.core.training.precision import PrecisionChoice, resolve
from tasks.core.training.sft import tokenize_sft


def precision_choice(spec: TrainSpec) -> PrecisionChoice:
    """The configured precision on this machine, with the reason (``precision.choose``)."""
    try:
        return resolve(spec.precision, training=True)
    except TrainingInputError as exc:
        raise TrainingInputError(f"train.{exc}") from None


def mixed_precision(spec: TrainSpec) -> str:
    """Accelerate's mixed-precision mode for the configured precision on this machine."""
    return precision_choice(spec).accelerate


def make_accelerator(spec: TrainSpec) -> Accelerator:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for what runs outside autocast
        torch.backends.cudnn.allow_tf32 = True
    # A collective that cannot complete (a peer died or hangs) fails after this long, so the
    # task fails and its retry resumes from the last checkpoint instead of waiting forever.
    group = InitProcessGroupKwargs(timeout=timedelta(seconds=spec.collective_timeout_s))
    mode = mixed_precision(spec)
    _forget_other_precision(mode)
    return Accelerator(
        mixed_precision=mode,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[group],
    )


def _forget_other_precision(mode: str) -> None:
    """Let a single process train again at another precision (in-process launcher, tests).

    accelerate keeps one process-wide state and refuses a second Accelerator with another
    mixed precision; a process of a group (WORLD_SIZE > 1) trains once, so it is never reset.
    """
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    other = shared and shared.get("_mixed_precision", mode) != mode
    if other and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=False)


def tokenized(task: str, split, tokenizer, max_length: int):
    """(model-input columns, lengths) of one prepared split."""
    if task == CAUSAL_LM:
        data = tokenize_sft(split, tokenizer, max_length)
    else:
        data = split.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=[c for c in split.column_names if c != "label"],
        )
        data = data.map(
            lambda batch: {"length": [len(x) for x in batch["input_ids"]]}, batched=True
        )
    lengths = data["length"]
    return data.remove_columns("length"), lengths


def load_model(ref: ModelRef, labels: list[str], lora: LoraSpec, train: TrainSpec, cache_dir):
    kwargs = {}
    quantized = quantization_config(lora)
    if quantized is not None:
        kwargs["quantization_config"] = quantized
    elif mixed_precision(train) == "bf16" and torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16  # frozen base in bf16; trainable weights stay fp32
    if train.task == CAUSAL_LM:
        base = load_causal_lm(ref, cache_dir, **kwargs)
    else:
        base = load_base(ref, labels, cache_dir, **kwargs)
    targets = list(lora.target_modules or []) or infer_target_modules(base)
    model = add_lora(base, lora, train.task, train.gradient_checkpointing)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if quantized is None and not torch.cuda.is_available():
        mode = precision_choice(train).mode
        if mode == "bf16":
            frozen_linears_to_bf16(model)
        elif mode == "int8":
            from tasks.core.training.int8_base import frozen_linears_to_int8

            frozen_linears_to_int8(model)
    return model, targets


def frozen_linears_to_bf16(model) -> int:
    """Store the frozen Linear layers' weights and biases in bf16, once.

    Under bf16 autocast every matmul casts its fp32 weight to bf16 on every forward (autocast
    caches casts only of trainable leaves), ~22M values per MiniLM step. Casting the frozen
    ones ahead gives the same bf16 values (same rounding), so the same results, without the
    per-step cast; LayerNorm, embeddings and every trainable weight (LoRA, head) stay fp32.
    Returns the number of layers converted.
    """
    converted = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None and not module.bias.requires_grad:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            converted += 1
    return converted
