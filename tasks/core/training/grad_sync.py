"""CPU process groups: one all-reduce per optimizer step instead of DistributedDataParallel.

Why: on CPU (gloo) every collective waits for the slower process, and on a small shared
machine the two processes of a step rarely arrive together. DDP meets the other process at
every forward (buffer broadcast) and in every backward (bucket hooks), and the loop added a
reduce of the stop flag; measured on this 2-core machine, two MiniLM processes lost ~3 s of
a 14 s epoch waiting. Here the LoRA gradients (a few hundred kilobytes) and the SIGTERM flag
travel in one flat tensor after the last micro-batch of a step: one meeting per step. GPUs
keep DDP (NCCL overlaps its bucketed all-reduce with the backward pass).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class StepSync:
    """Sums the trainable parameters' gradients over the process group, once per step."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params

    def broadcast_parameters(self) -> None:
        """Rank 0's trainable weights everywhere (what DDP does when it wraps a model)."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        dist.broadcast(flat, src=0)
        self._scatter(flat, [p.data for p in self.params])

    def all_reduce(self, stop: bool) -> bool:
        """Sum every rank's gradients in place; True when any rank asked to stop."""
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([float(stop)])])
        dist.all_reduce(flat)
        self._scatter(flat, grads)
        return bool(flat[-1] > 0)

    @staticmethod
    def _scatter(flat: torch.Tensor, into: list[torch.Tensor]) -> None:
        offset = 0
        for tensor in into:
            n = tensor.numel()
            tensor.copy_(flat[offset : offset + n].view_as(tensor))
            offset += n
