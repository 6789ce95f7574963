"""Build and run LoRA models from references: base repo@revision + adapter dir.

Training, evaluation and the registered MLflow model all go through these functions, so what
is evaluated is exactly what is served. The base model always comes from the Hugging Face
cache by repo id and pinned revision (offline: the local mirror; online: the Hub). Two tasks:
a sequence classifier (encoders) and a causal LM for supervised fine-tuning (decoders).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from tasks.core.config.train import LoraSpec
from tasks.core.errors import TrainingInputError
from tasks.core.training.first_token import cut_last_layer
from tasks.core.training.passes import length_passes
from tasks.core.training.refs import (  # noqa: F401 - light references, also importable here
    BASE_REF_FILE,
    CAUSAL_LM,
    SEQ_CLS,
    ModelRef,
    drop_peft_template_card,
    read_base_ref,
    read_task,
)
from tasks.core.training.tokenizer import load_tokenizer  # noqa: F401 - also importable here

PEFT_TASKS = {SEQ_CLS: TaskType.SEQ_CLS, CAUSAL_LM: TaskType.CAUSAL_LM}


def quantization_config(spec: LoraSpec):
    """bitsandbytes NF4 settings for QLoRA, or None; refuses clearly where it cannot run."""
    if spec.quantize_base == "none":
        return None
    if not torch.cuda.is_available():
        raise TrainingInputError(
            "lora.quantize_base: 4bit needs a CUDA GPU (bitsandbytes); this worker has none - "
            "set it to none, or run training on the GPU pool (train.work_pool)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingInputError(
            "lora.quantize_base: 4bit needs bitsandbytes: pip install 'loraflow[gpu]'"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_base(ref: ModelRef, labels: list[str], cache_dir: Path | None = None, **kwargs):
    """The sequence classifier; ``kwargs`` go to ``from_pretrained`` (dtype, quantization)."""
    return AutoModelForSequenceClassification.from_pretrained(
        ref.repo_id,
        revision=ref.revision,
        cache_dir=cache_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        **kwargs,
    )


def load_causal_lm(ref: ModelRef, cache_dir: Path | None = None, **kwargs):
    """The decoder; FlashAttention-2 when it is installed and a GPU runs it (packing-friendly).

    Without it the default SDPA attention still keeps packed examples apart: transformers
    builds a block-diagonal causal mask from position ids that restart per example.
    """
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        kwargs.setdefault("attn_implementation", "flash_attention_2")
    return AutoModelForCausalLM.from_pretrained(
        ref.repo_id, revision=ref.revision, cache_dir=cache_dir, **kwargs
    )


def linear_module_names(model) -> list[str]:
    """Distinct last names of the model's linear layers (what target_modules can name)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def infer_target_modules(model) -> list[str] | str:
    """PEFT's tested choice for the model type; any other architecture: every linear layer."""
    mapped = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
    return list(mapped) if mapped else "all-linear"


def add_lora(model, spec: LoraSpec, task: str = SEQ_CLS, gradient_checkpointing: bool = False):
    """Wrap the base in a LoRA adapter on the configured or inferred target modules."""
    targets = list(spec.target_modules) if spec.target_modules else infer_target_modules(model)
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    config = LoraConfig(
        task_type=PEFT_TASKS[task],
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
    )
    try:
        return get_peft_model(model, config)
    except ValueError:  # PEFT: the named targets match nothing (its message varies by version)
        if not spec.target_modules:
            raise
        raise TrainingInputError(
            f"lora.target_modules: {list(spec.target_modules or [])} match no layer of "
            f"{model.config.model_type}; linear layers here: {', '.join(linear_module_names(model))}"
        ) from None


def save_adapter(
    model, tokenizer, ref: ModelRef, labels: list[str], out_dir: Path, task: str = SEQ_CLS
) -> Path:
    """Adapter weights, tokenizer and the base reference, in one folder that travels as-is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    drop_peft_template_card(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / BASE_REF_FILE).write_text(
        json.dumps(
            {"repo_id": ref.repo_id, "revision": ref.revision, "labels": labels, "task": task},
            indent=2,
        )
    )
    return out_dir


def load_classifier(adapter_dir: Path, cache_dir: Path | None = None, merge: bool = False):
    """(model, tokenizer, labels) from an adapter folder written by ``save_adapter``.

    ``merge``: fold the LoRA into the base weights (W + scale * B A, exact in fp32), for
    inference: the same function without the adapter's extra matmuls and dtype casts (under
    bf16 autocast the unmerged PEFT layers cost ~1.5-1.8x the merged model on MiniLM).
    """
    ref, labels = read_base_ref(adapter_dir)
    base = load_base(ref, labels, cache_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    if merge:
        model = model.merge_and_unload()
    cut_last_layer(model)  # the head reads one position of the last layer: compute just it
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return model, tokenizer, labels


@torch.inference_mode()
def predict_proba(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 128,
    dtype: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None,
):
    """Class probabilities, batched by token length as training batches are (each batch padded
    to its longest text); ``dtype``: autocast dtype (bf16) or None for fp32; ``on_batch(done)``
    is called after each batch with the number of texts scored so far."""
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    done = 0
    for idx, batch, autocast in length_batches(
        model, tokenizer, texts, batch_size, max_length, dtype
    ):
        with autocast:
            logits = model(**batch).logits
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        done += len(idx)
        if on_batch is not None:
            on_batch(done)
    return probs


def length_batches(model, tokenizer, texts, batch_size: int, max_length: int, dtype):
    """(indices, padded batch on the model's device, autocast context) per forward pass over
    texts sorted by token length, as training batches are (each pass padded to its longest).
    On a CPU the sorted texts are cut where it is cheapest (``passes.cheapest_passes``: padding
    against each pass's fixed cost), passes of at most ``batch_size``; elsewhere in passes of
    ``batch_size``."""
    if not len(texts):
        return
    collator = DataCollatorWithPadding(tokenizer)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    device = next(model.parameters()).device
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()
    )
    for idx in length_passes(lengths, batch_size, cut=device.type == "cpu"):
        batch = collator([{k: encoded[k][j] for k in encoded} for j in idx])
        yield idx, {k: v.to(device) for k, v in batch.items()}, autocast


@torch.inference_mode()
def predict_with_states(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 128,
    dtype: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None,
):
    """(class probabilities, mean-pooled last hidden states, token counts) in one pass, batched
    as ``predict_proba`` batches (same probabilities): what monitoring profiles
    (``tasks/core/monitoring/features.py``) alongside the prediction. Token counts are the
    full lengths, truncated or not, so length drift shows; ``on_batch`` as ``predict_proba``'s."""
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    pooled = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not len(texts):
        return probs, pooled, []
    full = tokenizer(list(texts), verbose=False)["input_ids"]
    done = 0
    for idx, batch, autocast in length_batches(
        model, tokenizer, texts, batch_size, max_length, dtype
    ):
        with autocast:
            out = model(**batch, output_hidden_states=True)
        probs[idx] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        states = out.hidden_states[-1].float()
        pooled[idx] = ((states * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
        done += len(idx)
        if on_batch is not None:
            on_batch(done)
    return probs, pooled, [len(ids) for ids in full]
