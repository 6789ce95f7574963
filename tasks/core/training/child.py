"""How a training child is started: its process layout, argv and environment.

Light on purpose: no torch import unless the machine shows GPU devices.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

from tasks.core.home import REPO_ROOT
from tasks.core.ops.processes import PARENT_ENV, parent_marker
from tasks.core.training.forked import fork_agent


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


def command(job_file: Path | None, gpus: int, cpu_procs: int = 1) -> list[str]:
    """The child's argv: on a CPU the training agent forking ``cpu_procs`` ranks (without
    ``job_file`` it reads the job from stdin); plain Python on one GPU, ``accelerate launch``
    across several."""
    job = [str(job_file)] if job_file is not None else []
    if gpus == 0:
        return [sys.executable, "-m", "tasks.core.training.agent", "--procs", str(cpu_procs), *job]
    module = [sys.executable, "-m", "tasks.core.training.launcher", *job]
    if gpus > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        return [*launch, "--num_processes", str(gpus), *module[1:]]
    return module


_waiting: dict[int, subprocess.Popen] = {}  # CPU processes -> an agent started before its job


def prestart(train: dict, fork: bool = False) -> bool:
    """Start the CPU training agent of a job of ``train`` now, before the job exists, so its
    imports overlap what runs before training (``agent``); ``launch`` hands it the job.
    ``fork``: as a fork of this process where that is safe (``forked``: its imports are
    this process's), else fresh. Nothing on a GPU machine. Whether an agent now waits."""
    gpus, procs = layout(train)
    if gpus or procs in _waiting:
        return procs in _waiting
    argv, env = command(None, 0, procs), child_env(procs)
    proc = fork_agent(argv[3:], env) if fork else None  # argv: python -m AGENT ARGS...
    if proc is None:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=PIPE)
    _waiting[procs] = proc
    atexit.register(_discard, proc)
    return True


def take_prestarted(gpus: int, procs: int) -> subprocess.Popen | None:
    """The waiting agent for this layout, if one is alive (each serves one job)."""
    proc = _waiting.pop(procs, None) if gpus == 0 else None
    if proc is not None and proc.poll() is None:
        return proc
    return None


def discard_prestarted() -> None:
    """Stop every agent no job came for (the training was cached, or the run failed)."""
    while _waiting:
        _discard(_waiting.popitem()[1])


def _discard(proc: subprocess.Popen) -> None:
    if proc.poll() is None and proc.stdin is not None and not proc.stdin.closed:
        proc.terminate()  # still importing, or waiting for a job: nothing to save
        proc.wait()


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
