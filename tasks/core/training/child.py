"""How a training child is started: its process layout, argv and environment.

Light on purpose: no torch import unless the machine shows GPU devices.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.core.home import REPO_ROOT
from tasks.core.ops.processes import PARENT_ENV, parent_marker


def gpu_devices_present() -> bool:
    """Whether the machine shows GPU device nodes (NVIDIA, AMD): without them torch sees no
    GPU, and importing torch (a second or more) to ask is not needed."""
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


MIN_SHARE = 8  # examples of a micro-batch each CPU process should get, at least


def cpu_processes(train: dict) -> int:
    """How many single-threaded CPU processes train a job (see TrainSpec.cpu_processes)."""
    if train.get("cpu_processes"):
        return int(train["cpu_processes"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, int(train.get("batch_size", 1)) // MIN_SHARE))


def layout(train: dict, gpus: int | None = None) -> tuple[int, int]:
    """(GPUs, CPU processes) a job of ``train`` (a TrainSpec as plain data) is trained with."""
    if gpus is None:
        gpus = gpu_count() if gpu_devices_present() else 0
    return gpus, cpu_processes(train) if gpus == 0 else 1


def command(job_file: Path, gpus: int, cpu_procs: int = 1) -> list[str]:
    """The child's argv: plain Python, ``accelerate launch`` across GPUs, torchrun across cores."""
    module = ["-m", "tasks.core.training.launcher", str(job_file)]
    if gpus > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        return [*launch, "--num_processes", str(gpus), *module]
    if gpus == 0 and cpu_procs > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        return [*run, "--nproc-per-node", str(cpu_procs), *module]
    return [sys.executable, *module]


def child_env(procs: int) -> dict[str, str]:
    """The training child's environment: the repository importable, this process as the
    parent it must not outlive, one OpenMP thread per process across the cores."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        PARENT_ENV: parent_marker(),  # the child stops (with a checkpoint) if this one dies
    }
    if procs > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else procs
        env["OMP_NUM_THREADS"] = str(max(1, cores // procs))
    return env
