"""The training loop: plain PyTorch around an ``accelerate.Accelerator``, resumable at any step.

Why not ``transformers.Trainer``: a retry must continue from the exact optimizer step, data
position and RNG state of the last checkpoint, inside the same MLflow run, and the loop must
stop cleanly on SIGTERM; the loop is also small enough to stay fast on CPU (no per-step
callbacks, no sync per step for logging). ``Accelerator`` supplies what is not loraflow's to
write: device placement, mixed precision, DDP under ``accelerate launch``, gradient sync.

One optimizer step, in order: ``_forward_backward`` (every micro-batch of the step, this
rank's share of each), ``agree_to_stop`` (the step's one collective on CPU: gradients and
every rank's SIGTERM flag), ``_update`` (clip, optimizer, schedule), then ``_report`` (loss
and throughput at logging steps), ``_validate`` (at eval steps) and ``_after_step``
(stop together, or checkpoint at the cadence).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
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
class Split:
    """A tokenized split and each example's length (the batching order comes from these)."""

    data: Any
    lengths: list[int]


@dataclass(frozen=True)
class LoopHooks:
    """What the caller hears from the loop, and where it keeps checkpoints."""

    on_event: Callable[[StepEvent], None] = lambda event: None
    on_checkpoint: Callable[[Path, TrainState], None] = lambda path, state: None
    checkpoint_notes: Callable[[], dict] = dict
    checkpoint_root: Path | None = None
    resume_from: Path | None = None


@dataclass(frozen=True)
class LoopResult:
    steps: int
    train_loss: float  # mean loss over the optimizer steps of this attempt
    runtime_s: float  # training time over every attempt
    samples: int
    tokens: int
    resumed_from: int  # step of the checkpoint this attempt started from (0: fresh)


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


def agree_to_stop(local: bool, step_sync: StepSync | None, acc: Accelerator, world: int) -> bool:
    """Whether any rank asked to stop, as every rank learns it from the same collective.

    Also sums the step's gradients where a StepSync does that (they travel together).
    """
    if step_sync is not None:
        return step_sync.all_reduce(local)
    if world > 1:
        return float(acc.reduce(torch.tensor(float(local), device=acc.device), "max")) > 0
    return local


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
def validation_loss(
    model, split: Split, collate, spec: TrainSpec, causal: bool, device, autocast=nullcontext
) -> float:
    """Mean loss over the eval split (per target token for causal LMs, per example otherwise),
    computed under ``autocast()`` (the training's precision)."""
    model.eval()
    total, weight = 0.0, 0
    for batch_idx in epoch_batches(split.lengths, spec.batch_size, 0, 0, group_by_length=True):
        batch = collate(rows(split.data, batch_idx))
        n = count_targets(batch) if causal else len(batch_idx)
        inputs = {k: v.to(device) for k, v in batch.items()} | (CAUSAL_FORWARD if causal else {})
        with autocast():
            loss = model(**inputs).loss
        total += float(loss) * n
        weight += n
    model.train()
    return total / max(weight, 1)


@dataclass
class _Window:
    """What happened since the last logging step (loss stays on the device until then)."""

    device: torch.device
    loss: torch.Tensor = None
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.loss = torch.zeros((), device=self.device)


class TrainingLoop:
    """One training attempt of a PEFT model, from a checkpoint or from scratch."""

    def __init__(self, model, train: Split, collate, spec: TrainSpec, task: str, acc, hooks):
        if not train.lengths:
            raise TrainingInputError("the training split is empty")
        self.train, self.collate, self.spec, self.hooks = train, collate, spec, hooks
        self.acc, self.causal = acc, task == CAUSAL_LM
        self.world, self.rank, self.main = acc.num_processes, acc.process_index, acc.is_main_process
        self.batches_per_epoch = math.ceil(len(train.lengths) / spec.batch_size)
        self.total = plan_steps(spec, self.batches_per_epoch)[1]
        self.raw = model
        self._prepare(model)
        self.state = TrainState()
        if hooks.resume_from is not None:
            self.state = load_checkpoint(
                hooks.resume_from, self.raw, self.optimizer, self.scheduler, acc.scaler
            )
        if self.step_sync is not None:
            self.step_sync.broadcast_parameters()
        self.resumed_from = self.state.step
        if self.rank:  # dropout differs per rank
            torch.manual_seed(spec.seed + 1000 * self.rank + self.state.step)

    def _prepare(self, model) -> None:
        """Optimizer, schedule, and the model wrapped for this process group."""
        spec, acc = self.spec, self.acc
        if spec.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.params = [p for p in model.parameters() if p.requires_grad]
        fused = {"fused": True} if torch.cuda.is_available() else {"foreach": True}
        optimizer = torch.optim.AdamW(
            self.params, lr=spec.learning_rate, weight_decay=spec.weight_decay, **fused
        )
        self.scheduler = get_scheduler(
            spec.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(spec.warmup_ratio * self.total),
            num_training_steps=self.total,
        )
        # CPU process groups sum gradients once per step (grad_sync.py); GPUs use DDP.
        cpu_group = self.world > 1 and acc.device.type == "cpu"
        self.step_sync = StepSync(self.params) if cpu_group else None
        if self.step_sync is None:
            self.model, self.optimizer = acc.prepare(model, optimizer)
        else:
            self.model, self.optimizer = model, acc.prepare(optimizer)
        if spec.compile:
            self.model = torch.compile(self.model, dynamic=True)
        # DDP averages gradients over ranks, so each rank's loss is scaled by world to get the
        # sum; StepSync sums them as they are.
        self.rank_scale = self.world if self.step_sync is None else 1

    def run(self, eval_split: Split | None = None) -> LoopResult:
        spec, state = self.spec, self.state
        self.model.train()
        self.started = time.perf_counter()
        self.window, self.loss_sum, self.steps_here = _Window(self.acc.device), 0.0, 0
        with sigterm_flag() as stop:
            while state.step < self.total:
                batches = epoch_batches(
                    self.train.lengths,
                    spec.batch_size,
                    spec.seed,
                    state.epoch,
                    spec.group_by_length,
                )
                ga = spec.gradient_accumulation_steps
                for start in range(state.batch_in_epoch, self.batches_per_epoch, ga):
                    self._step(batches[start : start + ga], start, stop, eval_split)
                    if state.step >= self.total:
                        break
                if state.batch_in_epoch >= self.batches_per_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        self.acc.wait_for_everyone()
        return LoopResult(
            steps=state.step,
            train_loss=self.loss_sum / max(self.steps_here, 1),
            runtime_s=self.elapsed(),
            samples=state.samples,
            tokens=state.tokens,
            resumed_from=self.resumed_from,
        )

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def _step(self, step_batches: list[list[int]], start: int, stop, eval_split) -> None:
        """One optimizer step over ``step_batches`` (its micro-batches)."""
        samples, tokens = self._forward_backward(step_batches)
        # The one place every rank meets in a step: the stop decision is the reduced flag,
        # never the local one read later (a SIGTERM landing after this point is carried into
        # the next step's collective, on every rank alike).
        stop_now = agree_to_stop(stop.is_set(), self.step_sync, self.acc, self.world)
        state = self.state
        logging = (state.step + 1) % self.spec.logging_steps == 0 or state.step + 1 == self.total
        grad_norm = self._update(logging)
        state.step += 1
        state.batch_in_epoch = start + len(step_batches)
        state.samples += samples
        self.steps_here += 1
        self.window.steps += 1
        self.window.samples += samples
        self.window.tokens += tokens
        if logging:
            self._report(grad_norm)
        if (
            eval_split is not None
            and self.spec.eval_steps
            and state.step % self.spec.eval_steps == 0
        ):
            self._validate(eval_split)
        self._after_step(stop_now)

    def _forward_backward(self, step_batches: list[list[int]]) -> tuple[int, int]:
        """Gradients of every micro-batch of the step; (examples, tokens) it trained on."""
        acc, rank_scale = self.acc, self.rank_scale
        shards = [shard(idx, self.rank, self.world) for idx in step_batches]
        micro = [self.collate(rows(self.train.data, own)) for own, _ in shards]  # CPU: counts free
        weights = [
            (count_targets(b) if self.causal else len(b["labels"])) * real
            for b, (_, real) in zip(micro, shards, strict=True)
        ]
        samples = sum(len(idx) for idx in step_batches)
        # Every rank divides by the whole step's examples (known to all ranks) or target tokens
        # (each rank counts its own share).
        if self.causal:
            denominator = float(sum(weights))
            if self.world > 1:
                denominator = float(acc.reduce(torch.tensor(denominator), "sum"))
        else:
            denominator = float(samples)
        denominator = max(denominator, 1.0)
        tokens = sum(count_tokens(b) for b, (_, real) in zip(micro, shards, strict=True) if real)
        for i, batch in enumerate(micro):
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            sync = nullcontext() if last or self.step_sync else acc.no_sync(self.model)
            # The model runs under the accelerator's autocast (bf16 where chosen) also when
            # it is not wrapped by acc.prepare (CPU process groups); LoRA weights stay fp32.
            with sync:
                with acc.autocast():
                    if self.causal:
                        n_items = torch.tensor(denominator / rank_scale, device=acc.device)
                        out = self.model(**batch, **CAUSAL_FORWARD, num_items_in_batch=n_items)
                        loss = out.loss
                    else:
                        loss = self.model(**batch).loss * (weights[i] * rank_scale / denominator)
                loss = loss.float()
                if not shards[i][1]:
                    loss = loss * 0.0
                acc.backward(loss)
            self.window.loss += loss.detach() / rank_scale
        return samples, tokens

    def _update(self, logging: bool):
        """Clip, step the optimizer and the schedule; the gradient norm when it was computed."""
        grad_norm = None
        if self.spec.max_grad_norm is not None or logging:
            grad_norm = self.acc.clip_grad_norm_(self.params, self.spec.max_grad_norm or math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _report(self, grad_norm) -> None:
        """Loss and throughput since the last logging step, summed over ranks."""
        now, window, state = time.perf_counter(), self.window, self.state
        seconds = max(now - window.started, 1e-9)
        sums = torch.stack(
            [window.loss.float(), torch.tensor(float(window.tokens), device=self.acc.device)]
        )
        if self.world > 1:
            sums = self.acc.reduce(sums, "sum")
        loss_value, tokens = float(sums[0]) / window.steps, int(sums[1])
        self.loss_sum += loss_value * window.steps
        state.tokens += tokens
        self.hooks.on_event(
            StepEvent(
                step=state.step,
                total=self.total,
                epoch=state.epoch + state.batch_in_epoch / self.batches_per_epoch,
                train_loss=loss_value,
                learning_rate=self.scheduler.get_last_lr()[0],
                grad_norm=float(grad_norm) if grad_norm is not None else math.nan,
                samples_per_s=window.samples / seconds,
                tokens_per_s=tokens / seconds,
                elapsed_s=self.elapsed(),
            )
        )
        self.window = _Window(self.acc.device, started=now)

    def _validate(self, split: Split) -> None:
        state = self.state
        val = validation_loss(
            self.model, split, self.collate, self.spec, self.causal, self.acc.device,
            self.acc.autocast,
        )  # fmt: skip
        event = StepEvent(
            state.step, self.total, state.epoch, val, 0, 0, 0, 0, self.elapsed(), "eval"
        )
        self.hooks.on_event(event)
        self.window.started = time.perf_counter()

    def _after_step(self, stop_now: bool) -> None:
        """Stop together (checkpoint first), or checkpoint at the configured cadence."""
        if stop_now:
            self.acc.wait_for_everyone()
            raise Preempted(self.state.step, self.checkpoint())
        cadence = self.spec.checkpoint_steps
        if cadence and (self.state.step % cadence == 0 or self.state.step == self.total):
            self.checkpoint()

    def checkpoint(self) -> Path | None:
        hooks, state = self.hooks, self.state
        if hooks.checkpoint_root is None or not self.main:
            return None
        state.elapsed_s, saved = self.elapsed(), state.elapsed_s
        path = save_checkpoint(
            hooks.checkpoint_root,
            state,
            self.raw,
            self.optimizer,
            self.scheduler,
            self.acc.scaler,
            notes=hooks.checkpoint_notes(),
        )
        state.elapsed_s = saved
        hooks.on_checkpoint(path, state)
        return path


def train_loop(
    model,
    train: Split,
    collate: Callable[[list[dict]], dict],
    spec: TrainSpec,
    task: str,
    accelerator: Accelerator,
    hooks: LoopHooks = LoopHooks(),
    eval_split: Split | None = None,
) -> LoopResult:
    """Train ``model`` (a PEFT model) in place from ``hooks.resume_from`` or from scratch."""
    return TrainingLoop(model, train, collate, spec, task, accelerator, hooks).run(eval_split)
