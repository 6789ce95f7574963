"""Schema of the fine-tune stage: the LoRA adapter's shape and how it is trained.

Two kinds of fields live here. Most change what is trained (rank, learning rate, seed, ...)
and so belong to the training's identity: the cache key of the stage and the key a retry uses
to find its MLflow run and checkpoints again. A few only change how or where the same training
runs (``RUNTIME_FIELDS``: logging and checkpoint cadence, launcher, work pool); they are left
out of the identity, so moving a run to the GPU pool or checkpointing more often neither
re-trains a cached model nor orphans a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.core.config.spec import Spec


class LoraSpec(Spec):
    r: int = Field(8, ge=1, le=512, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: tuple[str, ...] | None = Field(
        None,
        description="Module names to adapt (e.g. [q_proj, v_proj]); default: inferred from the "
        "architecture (PEFT's table per model type, else every linear layer but the head).",
    )
    quantize_base: Literal["none", "4bit"] = Field(
        "none",
        description="'4bit': QLoRA - the frozen base loads in 4-bit NF4 through bitsandbytes "
        "(needs a CUDA GPU and the 'gpu' extra); 'none': the base keeps its precision.",
    )


class TrainSpec(Spec):
    # Left out of the training identity: they change how a run is watched or where it runs.
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = (
        "logging_steps",
        "eval_steps",
        "checkpoint_steps",
        "launcher",
        "cpu_processes",
        "work_pool",
        "collective_timeout_s",
    )

    task: Literal["sequence-classification", "causal-lm"] = Field(
        "sequence-classification",
        description="'sequence-classification': a classification head on an encoder (text + "
        "label rows); 'causal-lm': supervised fine-tuning of a decoder on prompt/response rows, "
        "loss on the response only.",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(5e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this value; None: no clipping."
    )
    batch_size: int = Field(32, ge=1, description="Examples per micro-batch.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step."
    )
    max_length: int = Field(128, ge=8, description="Truncate inputs to this many tokens.")
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together (batches are padded to their "
        "longest example, never to max_length).",
    )
    packing: bool = Field(
        True,
        description="causal-lm: concatenate a micro-batch into one padding-free row with "
        "position ids restarting per example (the attention keeps examples apart).",
    )
    seed: int = Field(42, description="Seed of initialisation, dropout and batch order.")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="Compute precision. 'auto': bf16 autocast with TF32 matmuls on a CUDA GPU "
        "that supports it (else fp16); on a CPU, bf16 autocast where it has a native bf16 unit "
        "(AMX-BF16, AVX512-BF16), else fp32. 'int8' (opt-in; an x86 CPU, no GPU): the frozen "
        "base's matmuls (forward and input gradients) in int8 with a range per token, ~1.3x "
        "fp32 on a CPU without bf16 units; LoRA weights, head and optimizer stay fp32.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30% slower."
    )
    compile: bool = Field(
        False, description="torch.compile the model (pays off on long GPU runs, not on short ones)."
    )
    logging_steps: int = Field(
        10, ge=1, description="Record loss, learning rate and throughput every N steps."
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="Record the eval split's loss (val_loss) every N steps; None: never.",
    )
    checkpoint_steps: int | None = Field(
        50,
        ge=1,
        description="Save a resumable checkpoint (adapter, optimizer, scheduler, RNG, data "
        "position) every N optimizer steps; always on SIGTERM. None: on SIGTERM only.",
    )
    launcher: Literal["subprocess", "in-process"] = Field(
        "subprocess",
        description="'subprocess': train in a child process (with several GPUs through "
        "'accelerate launch'), so a crash or an OOM kill leaves the task alive to retry; "
        "'in-process': inside the task's process (debugging, notebooks).",
    )
    cpu_processes: int | None = Field(
        None,
        ge=1,
        description="CPU only, subprocess launcher: training processes, each computing its share "
        "of every micro-batch on one thread, gradients averaged (DDP over gloo). On a small or "
        "shared CPU this beats one multi-threaded process, whose threads stall each other. "
        "None: one per usable core while each gets >= 8 examples of a micro-batch.",
    )
    collective_timeout_s: int = Field(
        600,
        ge=1,
        description="Several training processes: a gradient or stop-flag exchange that has not "
        "completed after this many seconds (a peer died or hangs) fails the training, so the "
        "task's retry resumes from the last checkpoint instead of waiting forever.",
    )
    work_pool: str | None = Field(
        None,
        description="Prefect work pool (e.g. 'gpu') whose workers run the training stage as its "
        "own deployment ('fine-tune/POOL', see docs/training.md); None: in the pipeline's process.",
    )

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is trained (the training's cache and resume key)."""
        return self.model_dump(mode="json", exclude=set(self.RUNTIME_FIELDS))
