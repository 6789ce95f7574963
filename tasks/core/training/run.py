"""LoRA fine-tuning from references into an MLflow run, resumable from its last checkpoint.

Input is a ``TrainJob`` (references only: base repo@revision, the prepared dataset's path,
an MLflow run id, the training identity); the output is the adapter in that run's
``adapter/`` artifacts (weights, tokenizer, ``loraflow_base.json``), which evaluation and
registration download. A retry of the stage finds the same run again by the identity tag and
continues from the newest checkpoint (local under the state home, or the copy in the run's
artifacts).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from transformers import set_seed

from tasks.core.data.prepare import load_prepared
from tasks.core.ops.processes import peak_rss_mb
from tasks.core.training import checkpoints
from tasks.core.training.batches import make_collator
from tasks.core.training.cpu_dropout import use_cpu_dropout
from tasks.core.training.first_token import cut_last_layer
from tasks.core.training.loop import LoopHooks, LoopResult, Split, train_loop
from tasks.core.training.modeling import load_tokenizer, save_adapter
from tasks.core.training.progress import MetricLog, ProgressCallback, StepEvent, plot_loss_curve
from tasks.core.training.runs import ADAPTER_ARTIFACT, RESUMED_TAG, TrainJob, TrainResult
from tasks.core.training.setup import load_model, make_accelerator, precision_choice, tokenized

LOSS_CURVE_ARTIFACT = "plots/loss_curve.png"


@dataclass
class _Prepared:
    """A training process after set-up: accelerator, model, tokenizer, tokenized splits."""

    accelerator: object
    model: object
    tokenizer: object
    targets: list[str]
    fast_dropout: int
    first_token: bool
    train: Split
    eval: Split | None


# What the CPU agent tokenized before it forked this rank (``tokenize_early``), by job.
_EARLY: dict[tuple, tuple[object, Split, Split | None]] = {}


def _early_key(job: TrainJob) -> tuple:
    train = job.train_spec
    return (job.prepared_path, job.repo_id, job.revision, job.cache_dir, train.task,
            train.max_length, bool(train.eval_steps))  # fmt: skip


def tokenize_early(job: TrainJob) -> None:
    """The tokenizer and the tokenized splits, made once in the CPU agent before it forks the
    ranks, which inherit them: each rank tokenized the whole split itself, all at once on
    the same cores (quickstart: 0.65-1.3 s of every rank's start, on the path to the first
    step). Tokenizing draws no random numbers, so the ranks' seeded start is unchanged."""
    tokenizer = load_tokenizer(job.ref, Path(job.cache_dir) if job.cache_dir else None)
    _EARLY[_early_key(job)] = (tokenizer, *_tokenized_splits(job, tokenizer))


def _tokenized_splits(job: TrainJob, tokenizer) -> tuple[Split, Split | None]:
    train = job.train_spec
    prepared = load_prepared(job.prepared_path)
    split = Split(*tokenized(train.task, prepared["train"], tokenizer, train.max_length))
    eval_split = None
    if train.eval_steps and "eval" in prepared:
        eval_split = Split(*tokenized(train.task, prepared["eval"], tokenizer, train.max_length))
    return split, eval_split


def _prepare(job: TrainJob) -> _Prepared:
    train, ref = job.train_spec, job.ref
    cache = Path(job.cache_dir) if job.cache_dir else None
    set_seed(train.seed)
    accelerator = make_accelerator(train)
    early = _EARLY.pop(_early_key(job), None)
    tokenizer = early[0] if early else load_tokenizer(ref, cache)
    model, targets = load_model(ref, list(job.labels), job.lora_spec, train, cache)
    fast_dropout = use_cpu_dropout(model) if accelerator.device.type == "cpu" else 0
    first_token = cut_last_layer(model)
    split, eval_split = early[1:] if early else _tokenized_splits(job, tokenizer)
    return _Prepared(
        accelerator, model, tokenizer, targets, fast_dropout, first_token, split, eval_split
    )


def _resume_point(job: TrainJob, mlc: MlflowClient, accelerator) -> Path | None:
    """The newest checkpoint every rank resumes from (rank 0 fetches the run's copy if needed)."""
    root = job.folder / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process and checkpoints.latest_checkpoint(root) is None:
        checkpoints.download_latest(mlc, job.run_id, root)  # a retry on another machine
    accelerator.wait_for_everyone()  # every rank resumes from the same checkpoint
    return checkpoints.latest_checkpoint(root)


def _record_start(mlc, job: TrainJob, ready: _Prepared, log: MetricLog, resume) -> None:
    """Run params on a fresh start; the metrics a killed attempt had not flushed on a resume."""
    if resume is not None:
        log.recover(checkpoints.read_notes(resume).get("unflushed_metrics", []))
        return
    trainable, total = ready.model.get_nb_trainable_parameters()
    params = {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "lora.resolved_target_modules": ready.targets,
        **precision_choice(job.train_spec).params("train"),
        "train.cpu_dropout_modules": ready.fast_dropout,
        "train.last_layer_first_token_only": ready.first_token,
    }
    mlc.log_batch(job.run_id, params=[Param(k, str(v)) for k, v in params.items()])


def fine_tune(
    job: TrainJob, on_event: ProgressCallback | None = None, mlc: MlflowClient | None = None
) -> TrainResult:
    """Train (or resume) a LoRA adapter, log per-step metrics to the run, upload the adapter."""
    from tasks.core.tracking import client

    mlc = mlc or client(job.tracking_uri)
    ready = _prepare(job)
    accelerator, main = ready.accelerator, ready.accelerator.is_main_process
    resume = _resume_point(job, mlc, accelerator)
    log = MetricLog(mlc if main else None, job.run_id)
    if main:
        _record_start(mlc, job, ready, log, resume)
        if resume is not None and on_event is not None:
            on_event(_resume_event(resume))
    uploaded: dict[str, str | None] = {"name": None}

    def on_checkpoint(path: Path, state: checkpoints.TrainState) -> None:
        log.flush()  # MLflow holds exactly the steps a resume will not train again
        checkpoints.upload_checkpoint(mlc, job.run_id, path, uploaded["name"])
        uploaded["name"] = path.name
        if on_event is not None:
            on_event(_checkpoint_event(state))

    def event(e: StepEvent) -> None:
        log.add(e)
        if on_event is not None and main:
            on_event(e)

    hooks = LoopHooks(
        on_event=event,
        on_checkpoint=on_checkpoint,
        checkpoint_notes=lambda: {"unflushed_metrics": log.unflushed()},
        checkpoint_root=job.folder / "checkpoints",
        resume_from=resume,
    )
    train = job.train_spec
    collate = make_collator(train.task, ready.tokenizer, train.packing)
    result = train_loop(
        ready.model, ready.train, collate, train, train.task, accelerator, hooks, ready.eval
    )
    peak = peak_rss_mb()
    if accelerator.num_processes > 1:  # the run's memory is every process's
        peak = float(accelerator.reduce(torch.tensor(peak, device=accelerator.device), "sum"))
    trainable, total = ready.model.get_nb_trainable_parameters()
    if not main:
        return TrainResult(job.run_id, ADAPTER_ARTIFACT, result.steps, 0.0, 0.0, trainable, total)
    final_loss = _finish(mlc, job, ready, log, result, peak)
    return TrainResult(
        job.run_id, ADAPTER_ARTIFACT, result.steps, final_loss, result.runtime_s, trainable,
        total, result.resumed_from, peak, time.time(),
    )  # fmt: skip


def _finish(mlc, job: TrainJob, ready: _Prepared, log, result: LoopResult, peak: float) -> float:
    """Summary metrics, the adapter and the loss curve into the run; local state removed."""
    log.flush()
    losses = [value for _, value in log.history.get("train_loss", [])]
    final_loss = sum(losses) / len(losses) if losses else result.train_loss
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
    stamp = int(time.time() * 1000)
    mlc.log_batch(job.run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in summary.items()])
    mlc.set_tag(job.run_id, RESUMED_TAG, str(result.resumed_from))

    out_dir = job.folder / "output"
    shutil.rmtree(out_dir, ignore_errors=True)
    model = ready.accelerator.unwrap_model(ready.model)
    train = job.train_spec
    adapter_dir = save_adapter(
        model, ready.tokenizer, job.ref, list(job.labels), out_dir / ADAPTER_ARTIFACT, train.task
    )
    mlc.log_artifacts(job.run_id, str(adapter_dir), ADAPTER_ARTIFACT)
    title = f"{job.repo_id} - run {job.run_id[:8]}"
    plot = plot_loss_curve(log.history, out_dir / "loss_curve.png", title)
    mlc.log_artifact(job.run_id, str(plot), str(Path(LOSS_CURVE_ARTIFACT).parent))
    # The artifact store holds the durable copy; checkpoints are no longer needed.
    checkpoints.remove_remote(mlc, job.run_id)
    shutil.rmtree(job.folder / "checkpoints", ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return final_loss


def _resume_event(checkpoint: Path) -> StepEvent:
    """'Resumed from step N': the step of the checkpoint this attempt continues from."""
    step = int(checkpoint.name.removeprefix(checkpoints.PREFIX))
    nan = float("nan")
    return StepEvent(step, 0, 0.0, nan, nan, nan, nan, nan, 0.0, "resume")


def _checkpoint_event(state: checkpoints.TrainState) -> StepEvent:
    nan = float("nan")
    return StepEvent(
        state.step, 0, state.epoch, nan, nan, nan, nan, nan, state.elapsed_s, "checkpoint"
    )
