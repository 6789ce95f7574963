"""A faster dropout for CPU training: the same Bernoulli masks from a cheaper random source.

Why: on CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element through
``bernoulli_``, about 10 ns each. A MiniLM LoRA step calls dropout 32 times (embeddings,
attention output, FFN output and the LoRA branch of every layer), and the profiler put
``aten::bernoulli_`` at 17% of the whole step on this machine. Here one 64-bit draw of
PyTorch's generator gives four 16-bit uniforms, each compared with ``p``: the keep
probability is ``1 - round(p * 65536) / 65536`` (off from ``1 - p`` by at most 8e-6), the
scale ``1 / (1 - p)`` is the same, and forward + backward take half the time. The saved mask
is kept scaled in the input's dtype (4 bytes per element where aten keeps 1) so the backward
is a single multiply: more activation memory, on CPU runs only, where models are small.

Only CPU tensors in training mode take this path; on a GPU (where dropout is cheap) and in
eval mode the module is ``nn.Dropout`` exactly. It draws from the default CPU generator, so
``set_seed`` and the RNG state a checkpoint saves still make a run reproducible and resumable.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask, each element True with probability 1 - p (in steps of 2**-16)."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    threshold = round(p * _LEVELS) - _LEVELS // 2  # int16 values are uniform on [-2**15, 2**15)
    return bits.view(torch.int16)[:n].view(shape) >= threshold


class _MaskedScale(torch.autograd.Function):
    """y = x * m with m = mask / (1 - p) in x's dtype; the backward is one multiply by m."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        scaled = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(scaled)
        return x * scaled

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scaled,) = ctx.saved_tensors
        return grad * scaled, None


class CpuDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training path uses :func:`keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        if self.inplace:
            return x.mul_(keep_mask(x.shape, self.p, x.device)).mul_(1.0 / (1.0 - self.p))
        return _MaskedScale.apply(x, self.p)


def use_cpu_dropout(model: nn.Module) -> int:
    """Swap every plain ``nn.Dropout`` in ``model`` for :class:`CpuDropout`; returns how many.

    Only modules: a model that calls ``functional.dropout`` itself (attention probabilities
    inside SDPA, for one) keeps the built-in kernel there. No parameters or buffers change,
    so state dicts and saved adapters are the same.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                replacement = CpuDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)  # containers too: "0" is a module name
                swapped += 1
    return swapped
