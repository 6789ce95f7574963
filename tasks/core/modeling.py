"""Build and run a LoRA sequence classifier from references: base repo@revision + adapter dir.

Training, evaluation and the registered MLflow model all go through these functions, so what
is evaluated is exactly what is served. The base model always comes from the Hugging Face
cache by repo id and pinned revision (offline: the local mirror; online: the Hub).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from tasks.core.config import LoraSpec

BASE_REF_FILE = "loraflow_base.json"


@dataclass(frozen=True)
class ModelRef:
    """A model pinned to a commit: the only way stages refer to a base model."""

    repo_id: str
    revision: str

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def load_tokenizer(ref: ModelRef, cache_dir: Path | None = None):
    return AutoTokenizer.from_pretrained(ref.repo_id, revision=ref.revision, cache_dir=cache_dir)


def load_base(ref: ModelRef, labels: list[str], cache_dir: Path | None = None):
    return AutoModelForSequenceClassification.from_pretrained(
        ref.repo_id,
        revision=ref.revision,
        cache_dir=cache_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def add_lora(model, spec: LoraSpec):
    """Wrap the base in a LoRA adapter; PEFT picks target modules when the config names none."""
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules) if spec.target_modules else None,
    )
    return get_peft_model(model, config)


def save_adapter(model, tokenizer, ref: ModelRef, labels: list[str], out_dir: Path) -> Path:
    """Adapter weights, tokenizer and the base reference, in one folder that travels as-is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / BASE_REF_FILE).write_text(
        json.dumps({"repo_id": ref.repo_id, "revision": ref.revision, "labels": labels}, indent=2)
    )
    return out_dir


def read_base_ref(adapter_dir: Path) -> tuple[ModelRef, list[str]]:
    data = json.loads((Path(adapter_dir) / BASE_REF_FILE).read_text())
    return ModelRef(data["repo_id"], data["revision"]), list(data["labels"])


def load_classifier(adapter_dir: Path, cache_dir: Path | None = None):
    """(model, tokenizer, labels) from an adapter folder written by ``save_adapter``."""
    ref, labels = read_base_ref(adapter_dir)
    base = load_base(ref, labels, cache_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return model, tokenizer, labels


@torch.inference_mode()
def predict_proba(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 128):
    """Class probabilities; batches of similar length so padding stays small."""
    collator = DataCollatorWithPadding(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length)
        batch = collator([{k: encoded[k][j] for k in encoded} for j in range(len(idx))])
        logits = model(**batch).logits
        probs[idx] = torch.softmax(logits.float(), dim=-1).numpy()
    return probs
