"""Which compute precision a process uses, and why: one decision for training, evaluation, serving.

``precision: auto`` means bf16 autocast where the hardware runs bf16 matmuls natively: a CUDA
GPU that supports bf16 (else fp16 with a grad scaler), or a CPU whose flags name a bf16 unit
(AMX-BF16: Intel Sapphire Rapids and later; AVX512-BF16: Intel Cooper Lake, AMD Zen 4 and
later). Only the forward and backward matmuls run in bf16 (``torch.autocast``); LoRA weights,
gradients and the optimizer stay fp32. Elsewhere fp32, since emulated bf16 is slower than
fp32. ``precision: int8`` (training only, opt-in, an x86 CPU with PyTorch's quantized engine)
runs the frozen base's matmuls in int8 instead (``int8_base``): ~1.28x a step on a CPU
without bf16 units at equal accuracy. ``auto`` keeps fp32 there, as its contract says (bf16
where native, fp32 elsewhere); docs/training.md says what int8 changes downstream.
The choice and its reason are recorded as run parameters (``train.resolved_precision``,
``train.precision_reason``) and with every evaluation.

The decision is a pure function of the request and the machine's facts (``choose``), so it is
tested for every kind of machine on any machine; ``resolve`` reads this machine's facts.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.core.errors import TrainingInputError

# CPU flags (Linux /proc/cpuinfo) of units that compute bf16 dot products natively.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MODES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16", "int8": "int8"}


@dataclass(frozen=True)
class PrecisionChoice:
    """``mode`` (accelerate's names ``no``, ``bf16``, ``fp16``; or ``int8``: the frozen base's
    matmuls in int8, fp32 to accelerate) and the reason for it."""

    mode: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    @property
    def accelerate(self) -> str:
        """Accelerate's mixed-precision mode (int8 is not autocast: fp32 to accelerate)."""
        return "no" if self.mode == "int8" else self.mode

    @property
    def label(self) -> str:
        return "fp32" if self.mode == "no" else self.mode

    def params(self, prefix: str) -> dict[str, str]:
        return {
            f"{prefix}.resolved_precision": self.mode,
            f"{prefix}.precision_reason": self.reason,
        }


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where the file does not exist: macOS, Windows)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_unit(flags: frozenset[str] | set[str]) -> str | None:
    """The first native bf16 unit the flags name (AMX before AVX512), or None."""
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def choose(
    requested: str,
    cuda: bool,
    cuda_bf16: bool,
    flags: frozenset[str] | set[str],
    int8_engine: bool = False,
) -> PrecisionChoice:
    """The precision for ``requested`` (auto, fp32, bf16, fp16, int8) on a machine with these
    facts; ``int8_engine``: a training process with PyTorch's x86 quantized engine (which
    ``int8`` needs; ``auto`` never picks it)."""
    if requested == "auto":
        if cuda:
            if cuda_bf16:
                return PrecisionChoice("bf16", "auto: CUDA GPU with bf16 support")
            return PrecisionChoice("fp16", "auto: CUDA GPU without bf16 support")
        unit = cpu_bf16_unit(flags)
        if unit is not None:
            return PrecisionChoice("bf16", f"auto: CPU has a native bf16 unit ({unit})")
        return PrecisionChoice(
            "no", f"auto: CPU without a native bf16 unit (none of {', '.join(CPU_BF16_FLAGS)})"
        )
    if requested == "fp16" and not cuda:
        raise TrainingInputError("precision: fp16 needs a CUDA GPU; use bf16 or fp32")
    if requested == "int8" and (cuda or not int8_engine):
        raise TrainingInputError(
            "precision: int8 needs a CPU with PyTorch's x86 quantized engine (fbgemm), "
            "and is for training only; use auto, fp32 or bf16"
        )
    return PrecisionChoice(MODES[requested], f"configured: {requested}")


def resolve(requested: str, training: bool = False) -> PrecisionChoice:
    """``choose`` with this machine's facts (int8 only for a training process)."""
    cuda = torch.cuda.is_available()
    int8 = False
    if training and not cuda and requested == "int8":
        from tasks.core.training import int8_base

        int8 = int8_base.available()
    return choose(requested, cuda, cuda and torch.cuda.is_bf16_supported(), cpu_flags(), int8)


def autocast(choice: PrecisionChoice, device_type: str = "cpu"):
    """The autocast context of ``choice`` (a no-op for fp32)."""
    if choice.dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=choice.dtype)
