"""The training loop: plain PyTorch around an ``accelerate.Accelerator``, resumable at any step.

Why not ``transformers.Trainer``: a retry must continue from the exact optimizer step, data
position and RNG state of the last checkpoint, inside the same MLflow run, and the loop must
stop cleanly on SIGTERM; the loop is also small enough to stay fast on CPU (no per-step
callbacks, no sync per step for logging). ``Accelerator`` supplies what is not loraflow's to
write: device placement, mixed precision, DDP under ``accelerate launch``, gradient sync.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from transformers import get_scheduler

from tasks.core.config.train import TrainSpec
from tasks.core.errors import Preempted, TrainingInputError
from tasks.core.training.batches import count_targets, count_tokens, epoch_batches, rows
from tasks.core.training.checkpoints import TrainState, load_checkpoint, save_checkpoint
from tasks.core.training.grad_sync import StepSync
from tasks.core.training.modeling import CAUSAL_LM
from tasks.core.training.progress import StepEvent

# A decoder's training forward: without a KV cache transformers derives the per-example
# causal mask of a packed row from its position ids; with one (the default when use_cache is
# on) the examples packed into a row would attend to each other.
CAUSAL_FORWARD = {"use_cache": False}


@dataclass(frozen=True)
class LoopResult:
    steps: int
    train_loss: float  # mean loss over the optimizer steps of this attempt
    runtime_s: float  # training time over every attempt
    samples: int
    tokens: int
    resumed_from: int  # step of the checkpoint this attempt started from (0: fresh)


def mixed_precision(spec: TrainSpec) -> str:
    """Accelerate's mixed-precision mode for the configured precision on this machine."""
    cuda = torch.cuda.is_available()
    if spec.precision == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec.precision == "fp16" and not cuda:
        raise TrainingInputError("train.precision: fp16 needs a CUDA GPU; use bf16 or fp32")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[spec.precision]


def make_accelerator(spec: TrainSpec) -> Accelerator:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for what runs outside autocast
        torch.backends.cudnn.allow_tf32 = True
    # A collective that cannot complete (a peer died or hangs) fails after this long, so the
    # task fails and its retry resumes from the last checkpoint instead of waiting forever.
    group = InitProcessGroupKwargs(timeout=timedelta(seconds=spec.collective_timeout_s))
    return Accelerator(
        mixed_precision=mixed_precision(spec),
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[group],
    )


def agree_to_stop(local: bool, step_sync: StepSync | None, acc: Accelerator, world: int) -> bool:
    """Whether any rank asked to stop, as every rank learns it from the same collective.

    Also sums the step's gradients where a StepSync does that (they travel together).
    """
    if step_sync is not None:
        return step_sync.all_reduce(local)
    if world > 1:
        return float(acc.reduce(torch.tensor(float(local), device=acc.device), "max")) > 0
    return local


def plan_steps(spec: TrainSpec, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for the configured budget.

    ``batch_size`` is the micro-batch of the whole run: with several processes each takes its
    share of every micro-batch, so the same config trains the same steps on any hardware.
    """
    ga = spec.gradient_accumulation_steps
    per_epoch = math.ceil(batches_per_epoch / ga)
    total = spec.max_steps or max(1, math.ceil(spec.epochs * per_epoch))
    return per_epoch, total


def shard(indices: list[int], rank: int, world: int) -> tuple[list[int], bool]:
    """This rank's share of a micro-batch; a rank left empty re-reads one example unweighted."""
    own = indices[rank::world]
    return (own, True) if own else (indices[:1], False)


@contextmanager
def sigterm_flag():
    """A flag SIGTERM sets; the loop checks it between optimizer steps (main thread only)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@torch.no_grad()
def validation_loss(model, data, lengths, collate, spec: TrainSpec, causal: bool, device) -> float:
    """Mean loss over the eval split (per target token for causal LMs, per example otherwise)."""
    model.eval()
    total, weight = 0.0, 0
    for batch_idx in epoch_batches(lengths, spec.batch_size, 0, 0, group_by_length=True):
        batch = collate(rows(data, batch_idx))
        n = count_targets(batch) if causal else len(batch_idx)
        inputs = {k: v.to(device) for k, v in batch.items()} | (CAUSAL_FORWARD if causal else {})
        total += float(model(**inputs).loss) * n
        weight += n
    model.train()
    return total / max(weight, 1)


def train_loop(
    model,
    data,
    lengths: list[int],
    collate: Callable[[list[dict]], dict],
    spec: TrainSpec,
    task: str,
    checkpoint_root: Path | None = None,
    resume_from: Path | None = None,
    on_event: Callable[[StepEvent], None] = lambda event: None,
    on_checkpoint: Callable[[Path, TrainState], None] = lambda path, state: None,
    checkpoint_notes: Callable[[], dict] = dict,
    eval_data=None,
    eval_lengths: list[int] | None = None,
    accelerator: Accelerator | None = None,
) -> LoopResult:
    """Train ``model`` (a PEFT model) in place from ``resume_from`` or from scratch."""
    acc = accelerator or make_accelerator(spec)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    ga = spec.gradient_accumulation_steps
    if not lengths:
        raise TrainingInputError("the training split is empty")
    batches_per_epoch = math.ceil(len(lengths) / spec.batch_size)
    per_epoch, total = plan_steps(spec, batches_per_epoch)

    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=spec.learning_rate,
        weight_decay=spec.weight_decay,
        **({"fused": True} if torch.cuda.is_available() else {"foreach": True}),
    )
    scheduler = get_scheduler(
        spec.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(spec.warmup_ratio * total),
        num_training_steps=total,
    )
    raw = model
    # CPU process groups sum gradients once per step (grad_sync.py); GPUs use DDP.
    step_sync = StepSync(params) if world > 1 and acc.device.type == "cpu" else None
    if step_sync is None:
        model, optimizer = acc.prepare(model, optimizer)
    else:
        optimizer = acc.prepare(optimizer)
    if spec.compile:
        model = torch.compile(model, dynamic=True)
    state = TrainState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, raw, optimizer, scheduler, acc.scaler)
    if step_sync is not None:
        step_sync.broadcast_parameters()
    # DDP averages gradients over ranks, so each rank's loss is scaled by world to get the
    # sum; StepSync sums them as they are.
    rank_scale = world if step_sync is None else 1
    resumed_from = state.step
    if rank:
        torch.manual_seed(spec.seed + 1000 * rank + state.step)  # dropout differs per rank
    causal = task == CAUSAL_LM
    model.train()

    started = time.perf_counter()
    window = {"loss": torch.zeros((), device=acc.device), "steps": 0, "samples": 0, "tokens": 0}
    window_start, loss_sum, steps_here = time.perf_counter(), 0.0, 0

    def elapsed() -> float:
        return state.elapsed_s + time.perf_counter() - started

    def checkpoint() -> Path | None:
        if checkpoint_root is None or not main:
            return None
        state.elapsed_s, saved = elapsed(), state.elapsed_s
        path = save_checkpoint(
            checkpoint_root,
            state,
            raw,
            optimizer,
            scheduler,
            acc.scaler,
            notes=checkpoint_notes(),
        )
        state.elapsed_s = saved
        on_checkpoint(path, state)
        return path

    with sigterm_flag() as stop:
        while state.step < total:
            batches = epoch_batches(
                lengths, spec.batch_size, spec.seed, state.epoch, spec.group_by_length
            )
            for start in range(state.batch_in_epoch, batches_per_epoch, ga):
                step_batches = batches[start : start + ga]
                shards = [shard(idx, rank, world) for idx in step_batches]
                micro = [collate(rows(data, own)) for own, _ in shards]  # on CPU: counts are free
                weights = [
                    (count_targets(b) if causal else len(b["labels"])) * real
                    for b, (_, real) in zip(micro, shards, strict=True)
                ]
                step_samples = sum(len(idx) for idx in step_batches)
                # Every rank divides by the whole step's examples (known to all ranks) or
                # target tokens (each rank counts its own share).
                if causal:
                    denominator = float(sum(weights))
                    if world > 1:
                        denominator = float(acc.reduce(torch.tensor(denominator), "sum"))
                else:
                    denominator = float(step_samples)
                denominator = max(denominator, 1.0)
                step_tokens = sum(
                    count_tokens(b) for b, (_, real) in zip(micro, shards, strict=True) if real
                )
                for i, batch in enumerate(micro):
                    batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
                    last = i == len(micro) - 1
                    sync = nullcontext() if last or step_sync else acc.no_sync(model)
                    with sync:
                        if causal:
                            n_items = torch.tensor(denominator / rank_scale, device=acc.device)
                            loss = model(**batch, **CAUSAL_FORWARD, num_items_in_batch=n_items).loss
                        else:
                            loss = model(**batch).loss * (weights[i] * rank_scale / denominator)
                        if not shards[i][1]:
                            loss = loss * 0.0
                        acc.backward(loss)
                    window["loss"] += loss.detach() / rank_scale
                # The one place every rank meets in a step: the stop decision is the reduced
                # flag, never the local one read later (a SIGTERM landing after this point is
                # carried into the next step's collective, on every rank alike).
                stop_now = agree_to_stop(stop.is_set(), step_sync, acc, world)
                window["samples"] += step_samples
                window["tokens"] += step_tokens
                logging = (state.step + 1) % spec.logging_steps == 0 or state.step + 1 == total
                grad_norm = None
                if spec.max_grad_norm is not None or logging:
                    grad_norm = acc.clip_grad_norm_(params, spec.max_grad_norm or float("inf"))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                state.step += 1
                state.batch_in_epoch = start + len(step_batches)
                state.samples += step_samples
                steps_here += 1
                window["steps"] += 1
                if logging:
                    now = time.perf_counter()
                    seconds = max(now - window_start, 1e-9)
                    sums = torch.stack(
                        [
                            window["loss"].float(),
                            torch.tensor(float(window["tokens"]), device=acc.device),
                        ]
                    )
                    if world > 1:
                        sums = acc.reduce(sums, "sum")
                    loss_value, tokens = float(sums[0]) / window["steps"], int(sums[1])
                    loss_sum += loss_value * window["steps"]
                    state.tokens += tokens
                    on_event(
                        StepEvent(
                            step=state.step,
                            total=total,
                            epoch=state.epoch + state.batch_in_epoch / batches_per_epoch,
                            train_loss=loss_value,
                            learning_rate=scheduler.get_last_lr()[0],
                            grad_norm=float(grad_norm) if grad_norm is not None else math.nan,
                            samples_per_s=window["samples"] / seconds,
                            tokens_per_s=tokens / seconds,
                            elapsed_s=elapsed(),
                        )
                    )
                    window = {
                        "loss": torch.zeros((), device=acc.device),
                        "steps": 0,
                        "samples": 0,
                        "tokens": 0,
                    }
                    window_start = now
                if eval_data is not None and spec.eval_steps and state.step % spec.eval_steps == 0:
                    val = validation_loss(
                        model, eval_data, eval_lengths, collate, spec, causal, acc.device
                    )
                    on_event(
                        StepEvent(
                            state.step, total, state.epoch, val, 0, 0, 0, 0, elapsed(), "eval"
                        )
                    )
                    window_start = time.perf_counter()
                if stop_now:
                    acc.wait_for_everyone()
                    raise Preempted(state.step, checkpoint())
                cadence = spec.checkpoint_steps
                if cadence and (state.step % cadence == 0 or state.step == total):
                    checkpoint()
                if state.step >= total:
                    break
            else:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                continue
            if state.batch_in_epoch >= batches_per_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    acc.wait_for_everyone()
    return LoopResult(
        steps=state.step,
        train_loss=loss_sum / max(steps_here, 1),
        runtime_s=elapsed(),
        samples=state.samples,
        tokens=state.tokens,
        resumed_from=resumed_from,
    )
