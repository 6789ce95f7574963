"""Training processes started before their job exists, so their start-up is off the critical path.

A training child spends seconds before its first step: ``torchrun`` starts, then each process
imports torch, transformers, PEFT and MLflow (about 5 s of CPU each, measured with py-spy on
this 2-core machine). ``loraflow run`` knows right after reading its config that it will
probably train, while the pipeline still has seconds to go before the training stage (Prefect's
server, the pipeline's own imports, data validation: mostly one busy core). So it starts the
processes then (``prewarm``); they import and wait for a job (``wait_for_job``). The
training stage's ``launch`` hands them its job file (``adopt``) when the process layout is the
one it would start, else starts its own as before. Processes nobody needed (training cached, or
the run failed before it) are killed (``release``): they hold nothing yet.

The handoff is a file written atomically: the job file's path. A waiting process whose parent
is gone, or that waited ``WAIT_S``, exits 0 without a word.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.training.child import child_env, command, layout

WAIT_S = 900.0  # a warm process nobody hands a job exits after this


@dataclass
class Warm:
    proc: subprocess.Popen
    handoff: Path
    layout: tuple  # (gpus, processes): what ``launch`` would start for a job


_warm: list[Warm] = []  # at most one


def prewarm(train: dict, folder: Path) -> Warm:
    """Start the training processes for a job of ``train`` (a TrainSpec as plain data) now."""
    from tasks.core.home import REPO_ROOT

    release()
    gpus, procs = layout(train)
    folder.mkdir(parents=True, exist_ok=True)
    handoff = folder / f"handoff-{os.getpid()}-{time.monotonic_ns()}"
    argv = command(handoff, gpus, procs, wait=True)
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env(procs))  # as ``launch`` does
    warm = Warm(proc, handoff, (gpus, procs))
    _warm.append(warm)
    if len(_warm) == 1:
        atexit.register(release)
    return warm


def adopt(job_file: Path, gpus: int, procs: int) -> Warm | None:
    """The warm processes, now training ``job_file`` (the caller removes ``handoff`` once they
    exit); None when there are none to hand it to (none started, another layout, or dead)."""
    if not _warm:
        return None
    warm = _warm[0]
    if warm.layout != (gpus, procs) or warm.proc.poll() is not None:
        release()
        return None
    _warm.clear()
    tmp = warm.handoff.with_suffix(".tmp")
    tmp.write_text(str(job_file))
    os.replace(tmp, warm.handoff)
    return warm


def release() -> None:
    """Kill warm processes no job was handed to."""
    while _warm:
        warm = _warm.pop()
        if warm.proc.poll() is None:
            _kill_tree(warm.proc.pid)
            warm.proc.wait()
        warm.handoff.unlink(missing_ok=True)


def inputs_key(config_sha256: str, files: list[Path]) -> str:
    """What decides whether a run will train: the config and its data files (path, size,
    modification time), as one key."""
    import hashlib
    import json

    stamps = []
    for path in files:
        try:
            stat = Path(path).stat()
            stamps.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            stamps.append([str(path), None, None])
    return hashlib.sha256(json.dumps([config_sha256, stamps]).encode()).hexdigest()


def seen(folder: Path, key: str) -> bool:
    """Whether a run with these inputs completed here before: its training is then most likely
    a cache hit, and warm processes would only take CPU from the cached run."""
    return (folder / f"trained-{key[:32]}").is_file()


def remember(folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"trained-{key[:32]}").touch()


def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts each worker in a
    session of its own, so one process group does not hold them all)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def _import_late_modules() -> None:
    """What a training imports only at its end (the loss plot), imported while there is
    nothing else to do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def wait_for_job(handoff: Path, parent: str, poll_s: float = 0.05) -> Path | None:
    """The child's side: the job file handed over, or None (parent gone, or waited too long).

    Imports what training needs first: the point of waiting warm."""
    import tasks.core.training.run  # noqa: F401 - torch, transformers, PEFT, MLflow

    _import_late_modules()
    from tasks.core.ops.processes import parent_alive

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if handoff.is_file():
            return Path(handoff.read_text().strip())
        if parent and not parent_alive(parent):
            return None
        time.sleep(poll_s)
    return None
