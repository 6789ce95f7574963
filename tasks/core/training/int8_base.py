"""int8 matmuls through the frozen base of a LoRA model, for CPUs without a bf16 unit.

Why: on such a CPU (AVX2, or AVX-512 without BF16) a LoRA step is bound by fp32 GEMMs with
the frozen weights: the forward, and the input gradients of the backward (the frozen weights
get no gradient). PyTorch's x86 quantized engine (fbgemm) multiplies uint8 by int8 about
1.5x faster than fp32 there, so ``precision: int8`` runs exactly those two products in int8:

- forward ``y = x W^T + b``: each row (token) of ``x`` is quantized on its own, asymmetric
  (the row's min to max in 7 bits), so a token's result does not depend on its neighbours;
  ``W`` per output channel, symmetric 8 bits;
- backward ``dx = dy W``: each row of ``dy`` scaled by its own absolute maximum (gradients
  are centred), ``W^T`` per channel.

The LoRA weights, the head, LayerNorms, attention, the optimizer and every gradient that
updates a weight stay fp32; the stored model and its evaluation are untouched (the int8
copies live beside the fp32 weights, which stay the reference). fbgemm quantizes one range
per tensor; scaling each row into [-1, 1] first (and back after) gives it one per row.
A prototype of the same arithmetic moved the dev accuracy -0.2 points against fp32 over five
seeds; the training benchmark's (c8) checks it over three (docs/benchmarks.md). Opt-in:
``precision: auto`` keeps fp32 on such CPUs (docs/training.md says why). Memory: two int8
copies of each frozen weight (half the fp32 size). The layer's class stays ``nn.Linear``
(PEFT checks it): only its ``forward`` is replaced, on the instance.
"""

from __future__ import annotations

import functools
import types
import warnings
from dataclasses import dataclass

import torch
from torch import nn

ENGINES = ("x86", "fbgemm")  # PyTorch's quantized engines with fast u8 x s8 GEMMs on x86
TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class _Packed:
    """One frozen Linear's int8 weights, for the forward and for the backward, and ``shift``:
    the weights' row sums (``W 1``, which undo the rows' centring) over the bias, if any."""

    forward: object
    backward: object
    shift: torch.Tensor


def _pack(weight: torch.Tensor) -> object:
    """fbgemm's packed form of ``weight`` [out, in]: int8, one symmetric scale per row."""
    scale = (weight.abs().amax(dim=1).clamp_min(TINY) / 127).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated, not gone (torch 2.13)
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None)


def _matmul(x: torch.Tensor, packed: object) -> torch.Tensor:
    """``x @ W^T`` in int8 for rows already within [-1, 1] (one range for the tensor)."""
    return torch.ops.quantized.linear_dynamic(x, packed, True)  # 7-bit activations: no overflow


SHRINK = 1 - 2**-16  # scaled rows stay inside [-1, 1] despite rounding


def _scaled_matmul(rows, offset, scale, packed) -> torch.Tensor:
    """``((rows - offset) / scale) @ W^T`` in int8, then times ``scale`` (per row: offset
    and scale are columns, offset may be None). Two pinning rows (-1 and 1) fix the tensor's
    range to exactly [-1, 1], so a row's quantization, and its result, never depend on its
    neighbours: fbgemm takes one range per tensor, and rows merely scaled to +-1 reach it
    only to within rounding (seen: a row's output moved by 1 ulp beside a 1000x row)."""
    count, width = rows.shape
    buffer = rows.new_empty(count + 2, width)
    body = buffer[:count]
    inverse = scale.reciprocal().mul_(SHRINK)
    if offset is None:
        torch.mul(rows, inverse, out=body)
    else:
        torch.sub(rows, offset, out=body).mul_(inverse)
    buffer[count:].zero_()
    buffer[count, 0], buffer[count + 1, 0] = -1.0, 1.0
    return _matmul(buffer, packed)[:count].mul_(scale / SHRINK)


def _rows_range(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # amax and amin, not aminmax: aminmax over a dimension is ~20x slower on CPU (torch 2.13)
    return rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True)


class _Int8Linear(torch.autograd.Function):
    """Elementwise work in place where it can be: on a CPU each pass over a token-by-feature
    matrix costs about as much as the int8 GEMM saves per thousand features."""

    @staticmethod
    def forward(ctx, x, packed: _Packed):
        ctx.packed = packed
        rows = x.reshape(-1, x.shape[-1])
        low, high = _rows_range(rows)
        half = (high - low).mul_(0.5).clamp_min_(TINY)
        middle = (high + low).mul_(0.5)
        y = _scaled_matmul(rows, middle, half, packed.forward)
        # + middle * W 1 (+ bias) elementwise: a rank-2 addmm_ rounds a lone row differently
        y.addcmul_(middle, packed.shift[0])
        if packed.shift.shape[0] == 2:
            y.add_(packed.shift[1])
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None
        rows = grad.reshape(-1, grad.shape[-1])
        low, high = _rows_range(rows)
        scale = torch.maximum(high, low.neg_()).clamp_min_(TINY)
        dx = _scaled_matmul(rows, None, scale, ctx.packed.backward)
        return dx.reshape(*grad.shape[:-1], dx.shape[-1]), None


def _int8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return _Int8Linear.apply(x.float(), self._loraflow_int8)


def convert(linear: nn.Linear) -> None:
    """Run ``linear`` (frozen, fp32) through int8 matmuls from now on."""
    weight = linear.weight.detach().float()
    shift = [weight.sum(1)] + ([] if linear.bias is None else [linear.bias.detach().float()])
    packed = _Packed(_pack(weight), _pack(weight.t().contiguous()), torch.stack(shift))
    linear._loraflow_int8 = packed
    linear.forward = types.MethodType(_int8_forward, linear)


def frozen_linears_to_int8(model: nn.Module) -> int:
    """Convert every frozen ``nn.Linear`` of ``model`` (PEFT's base layers included, its
    trainable head and LoRA matrices not); returns how many."""
    converted = 0
    for module in model.modules():
        frozen = type(module) is nn.Linear and not module.weight.requires_grad
        if frozen and (module.bias is None or not module.bias.requires_grad):
            convert(module)
            converted += 1
    return converted


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this PyTorch has an x86 quantized engine that runs the int8 matmuls."""
    if not set(ENGINES) & set(torch.backends.quantized.supported_engines):
        return False
    try:
        packed = _pack(torch.eye(4))
        return bool(
            torch.allclose(_matmul(torch.eye(4) * 0.5, packed), torch.eye(4) * 0.5, atol=0.02)
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
