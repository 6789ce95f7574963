"""LoRA fine-tuning of a sequence classifier with ``transformers.Trainer`` and PEFT.

Inputs are references only (base repo@revision, the prepared dataset's path, an MLflow run
id); the output is the adapter in that run's artifacts. Batches are padded dynamically and
grouped by length, so short SST-2 sentences never pay for ``max_length``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from tasks.core.config import LoraSpec, TrainSpec
from tasks.core.data import load_prepared
from tasks.core.modeling import ModelRef, add_lora, load_base, load_tokenizer, save_adapter
from tasks.core.tracking import MetricBuffer

ADAPTER_ARTIFACT = "adapter"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    adapter_artifact: str
    steps: int
    train_loss: float
    runtime_s: float
    trainable_parameters: int
    total_parameters: int


class MlflowStepLogger(TrainerCallback):
    """Trainer logs -> batched MLflow metrics keyed by optimizer step."""

    KEYS = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}

    def __init__(self, buffer: MetricBuffer, batch_size: int):
        self.buffer, self.batch_size = buffer, batch_size
        self.last = (time.time(), 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        now = time.time()
        stamp = int(now * 1000)
        for key, name in self.KEYS.items():
            if logs and key in logs:
                self.buffer.add(name, logs[key], state.global_step, stamp)
        then, step = self.last
        if state.global_step > step and now > then:
            rate = (state.global_step - step) * self.batch_size / (now - then)
            self.buffer.add("samples_per_s", rate, state.global_step, stamp)
        self.last = (now, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.buffer.flush()


def training_params(ref: ModelRef, lora: LoraSpec, train: TrainSpec, fingerprint: str) -> dict:
    params = {
        "base_repo_id": ref.repo_id,
        "base_revision": ref.revision,
        "dataset_sha256": fingerprint,
    }
    params |= {f"lora.{k}": v for k, v in lora.model_dump(mode="json").items()}
    params |= {f"train.{k}": v for k, v in train.model_dump(mode="json").items()}
    return {k: str(v) for k, v in params.items()}


def fine_tune(
    ref: ModelRef,
    prepared_path: str,
    labels: list[str],
    lora: LoraSpec,
    train: TrainSpec,
    mlc: MlflowClient,
    run_id: str,
    work_dir: Path,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter, log per-step metrics to ``run_id`` and upload the adapter there."""
    torch.manual_seed(train.seed)
    tokenizer = load_tokenizer(ref, cache_dir)
    model = add_lora(load_base(ref, labels, cache_dir), lora)
    trainable, total = model.get_nb_trainable_parameters()
    mlc.log_param(run_id, "trainable_parameters", trainable)

    data = load_prepared(prepared_path)["train"]
    data = data.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=train.max_length),
        batched=True,
        remove_columns=["text"],
    )
    out_dir = Path(work_dir) / "trainer" / run_id
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        logging_steps=train.logging_steps,
        seed=train.seed,
        data_seed=train.seed,
        train_sampling_strategy="group_by_length",
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
    )
    buffer = MetricBuffer(mlc, run_id)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[MlflowStepLogger(buffer, train.batch_size * train.gradient_accumulation_steps)],
    )
    started = time.time()
    output = trainer.train()
    runtime = time.time() - started
    buffer.flush()
    mlc.log_metric(run_id, "train_runtime_s", runtime)
    mlc.log_metric(run_id, "train_final_loss", output.training_loss)

    adapter_dir = save_adapter(model, tokenizer, ref, labels, out_dir / ADAPTER_ARTIFACT)
    mlc.log_artifacts(run_id, str(adapter_dir), ADAPTER_ARTIFACT)
    shutil.rmtree(out_dir, ignore_errors=True)  # the artifact store holds the durable copy
    return TrainResult(
        run_id,
        ADAPTER_ARTIFACT,
        output.global_step,
        output.training_loss,
        runtime,
        trainable,
        total,
    )
