"""LoRA fine-tuning from references into an MLflow run, resumable from its last checkpoint.

Inputs are references only (base repo@revision, the prepared dataset's path, an MLflow run
id, the training identity); the output is the adapter in that run's ``adapter/`` artifacts
(weights, tokenizer, ``loraflow_base.json``), which evaluation and registration download.
A retry of the stage finds the same run again by the identity tag and continues from the
newest checkpoint (local under the state home, or the copy in the run's artifacts).
"""

from __future__ import annotations

import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from transformers import set_seed

from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.data.prepare import load_prepared
from tasks.core.training import checkpoints
from tasks.core.training.batches import make_collator
from tasks.core.training.cpu_dropout import use_cpu_dropout
from tasks.core.training.loop import LoopResult, make_accelerator, mixed_precision, train_loop
from tasks.core.training.modeling import (
    CAUSAL_LM,
    ModelRef,
    add_lora,
    infer_target_modules,
    load_base,
    load_causal_lm,
    load_tokenizer,
    quantization_config,
    save_adapter,
)
from tasks.core.training.progress import MetricLog, ProgressCallback, StepEvent, plot_loss_curve
from tasks.core.training.sft import tokenize_sft

ADAPTER_ARTIFACT = "adapter"
LOSS_CURVE_ARTIFACT = "plots/loss_curve.png"
IDENTITY_TAG = "loraflow.train_identity"
RESUMED_TAG = "loraflow.resumed_from_step"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    adapter_artifact: str
    steps: int
    train_loss: float
    runtime_s: float
    trainable_parameters: int
    total_parameters: int
    resumed_from_step: int = 0
    peak_rss_mb: float = 0.0


def training_params(ref: ModelRef, lora: LoraSpec, train: TrainSpec, fingerprint: str) -> dict:
    params = {
        "base_repo_id": ref.repo_id,
        "base_revision": ref.revision,
        "dataset_sha256": fingerprint,
    }
    params |= {f"lora.{k}": v for k, v in lora.model_dump(mode="json").items()}
    params |= {f"train.{k}": v for k, v in train.model_dump(mode="json").items()}
    return {k: str(v) for k, v in params.items()}


def job_dir(work_dir: Path, identity: str) -> Path:
    """Where a training identity keeps its checkpoints and launcher files."""
    return Path(work_dir) / "training" / identity


def find_run(mlc: MlflowClient, experiment_id: str, identity: str, flow_run_id: str = ""):
    """The MLflow run a (re)try of this training continues, or None for a fresh start.

    First a run of this flow run that already finished (the task failed after training, so the
    retry only reports it); then the newest unfinished run of this identity (resume it).
    """
    runs = mlc.search_runs(
        [experiment_id],
        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        tags = run.data.tags
        if (
            run.info.status == "FINISHED"
            and flow_run_id
            and tags.get("prefect.flow_run_id") == (flow_run_id)
        ):
            return run
    return next((run for run in runs if run.info.status != "FINISHED"), None)


def latest_finished_run(mlc: MlflowClient, experiment_id: str, identity: str):
    """The newest finished training of this identity (what a remote worker just trained)."""
    runs = mlc.search_runs(
        [experiment_id],
        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def result_from_run(run) -> TrainResult:
    """The TrainResult a finished run records (for a retry, or a run on another worker)."""
    metrics, params = run.data.metrics, run.data.params
    return TrainResult(
        run_id=run.info.run_id,
        adapter_artifact=ADAPTER_ARTIFACT,
        steps=int(metrics.get("train_steps", 0)),
        train_loss=float(metrics.get("train_final_loss", float("nan"))),
        runtime_s=float(metrics.get("train_runtime_s", 0.0)),
        trainable_parameters=int(params.get("trainable_parameters", 0)),
        total_parameters=int(params.get("total_parameters", 0)),
        resumed_from_step=int(run.data.tags.get(RESUMED_TAG, 0)),
        peak_rss_mb=float(metrics.get("train_peak_rss_mb", 0.0)),
    )


def _tokenized(task: str, split, tokenizer, max_length: int):
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


def _load_model(ref: ModelRef, labels: list[str], lora: LoraSpec, train: TrainSpec, cache_dir):
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
    return model, targets


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
    identity: str | None = None,
    on_event: ProgressCallback | None = None,
) -> TrainResult:
    """Train (or resume) a LoRA adapter, log per-step metrics to ``run_id``, upload the adapter."""
    set_seed(train.seed)
    accelerator = make_accelerator(train)
    main = accelerator.is_main_process
    tokenizer = load_tokenizer(ref, cache_dir)
    model, targets = _load_model(ref, labels, lora, train, cache_dir)
    fast_dropout = use_cpu_dropout(model) if accelerator.device.type == "cpu" else 0
    trainable, total = model.get_nb_trainable_parameters()
    prepared = load_prepared(prepared_path)
    data, lengths = _tokenized(train.task, prepared["train"], tokenizer, train.max_length)
    eval_data = eval_lengths = None
    if train.eval_steps and "eval" in prepared:
        eval_data, eval_lengths = _tokenized(
            train.task, prepared["eval"], tokenizer, train.max_length
        )

    root = job_dir(work_dir, identity or run_id) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    if main and checkpoints.latest_checkpoint(root) is None:
        checkpoints.download_latest(mlc, run_id, root)  # a retry on another machine
    accelerator.wait_for_everyone()  # every rank resumes from the same checkpoint
    resume = checkpoints.latest_checkpoint(root)
    log = MetricLog(mlc if main else None, run_id)
    if main:
        if resume is None:
            mlc.log_batch(
                run_id,
                params=[
                    _param("trainable_parameters", trainable),
                    _param("total_parameters", total),
                    _param("lora.resolved_target_modules", targets),
                    _param("train.resolved_precision", mixed_precision(train)),
                    _param("train.cpu_dropout_modules", fast_dropout),
                ],
            )
        else:
            log.recover(checkpoints.read_notes(resume).get("unflushed_metrics", []))
    uploaded: dict[str, str | None] = {"name": None}

    def on_checkpoint(path: Path, state: checkpoints.TrainState) -> None:
        log.flush()  # MLflow holds exactly the steps a resume will not train again
        checkpoints.upload_checkpoint(mlc, run_id, path, uploaded["name"])
        uploaded["name"] = path.name
        if on_event is not None:
            on_event(_checkpoint_event(state))

    def event(e: StepEvent) -> None:
        log.add(e)
        if on_event is not None and main:
            on_event(e)

    result: LoopResult = train_loop(
        model,
        data,
        lengths,
        make_collator(train.task, tokenizer, train.packing),
        train,
        train.task,
        checkpoint_root=root,
        resume_from=resume,
        on_event=event,
        on_checkpoint=on_checkpoint,
        checkpoint_notes=lambda: {"unflushed_metrics": log.unflushed()},
        eval_data=eval_data,
        eval_lengths=eval_lengths,
        accelerator=accelerator,
    )
    peak = peak_rss_mb()
    if accelerator.num_processes > 1:  # the run's memory is every process's
        peak = float(accelerator.reduce(torch.tensor(peak, device=accelerator.device), "sum"))
    if not main:
        return TrainResult(run_id, ADAPTER_ARTIFACT, result.steps, 0.0, 0.0, trainable, total)
    log.flush()
    losses = [value for _, value in log.history.get("train_loss", [])]
    final_loss = sum(losses) / len(losses) if losses else result.train_loss
    stamp = int(time.time() * 1000)
    summary = {
        "train_runtime_s": result.runtime_s,
        "train_final_loss": final_loss,
        "train_steps": result.steps,
        "train_samples": result.samples,
        "train_tokens": result.tokens,
        "train_peak_rss_mb": peak,
    }
    if torch.cuda.is_available():
        summary["train_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    mlc.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in summary.items()])
    mlc.set_tag(run_id, RESUMED_TAG, str(result.resumed_from))

    out_dir = job_dir(work_dir, identity or run_id) / "output"
    shutil.rmtree(out_dir, ignore_errors=True)
    adapter_dir = save_adapter(
        accelerator.unwrap_model(model),
        tokenizer,
        ref,
        labels,
        out_dir / ADAPTER_ARTIFACT,
        train.task,
    )
    mlc.log_artifacts(run_id, str(adapter_dir), ADAPTER_ARTIFACT)
    plot = plot_loss_curve(
        log.history, out_dir / "loss_curve.png", f"{ref.repo_id} - run {run_id[:8]}"
    )
    mlc.log_artifact(run_id, str(plot), str(Path(LOSS_CURVE_ARTIFACT).parent))
    # The artifact store holds the durable copy; checkpoints are no longer needed.
    checkpoints.remove_remote(mlc, run_id)
    shutil.rmtree(job_dir(work_dir, identity or run_id) / "checkpoints", ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return TrainResult(
        run_id,
        ADAPTER_ARTIFACT,
        result.steps,
        final_loss,
        result.runtime_s,
        trainable,
        total,
        result.resumed_from,
        peak,
    )


def _param(key: str, value) -> Param:
    return Param(key, str(value))


def _checkpoint_event(state: checkpoints.TrainState) -> StepEvent:
    nan = float("nan")
    return StepEvent(
        state.step, 0, state.epoch, nan, nan, nan, nan, nan, state.elapsed_s, "checkpoint"
    )
