"""Run ``fine_tune`` in a child process and relay its progress to the parent (the Prefect task).

Training in a child keeps the task alive when training dies: a CUDA OOM, a segfault in a
kernel or the kernel's OOM killer ends the child, the task sees the exit status and raises,
and Prefect's retry starts a new child that resumes from the last checkpoint. On a CPU the
child is the training agent (``agent``: it imports the training stack once and forks one rank
per process; ``loraflow run`` starts it early, and ``launch`` hands it the job); with more than
one GPU it is ``accelerate launch`` (one process per GPU, DDP). SIGTERM sent to the
parent is forwarded, so the child checkpoints before it stops.

Protocol, all files in the identity's job folder: ``job.json`` (what to train), ``events.jsonl``
(one ``StepEvent`` per line, appended by rank 0), ``result.json`` or ``error.json`` at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from tasks.core.errors import TrainingInputError, TrainingProcessFailed
from tasks.core.home import REPO_ROOT
from tasks.core.ops.processes import PARENT_ENV, parent_alive, skip_final_collections
from tasks.core.training.child import (  # noqa: F401 - the child's argv and layout, here too
    MIN_SHARE,
    child_env,
    command,
    cpu_processes,
    gpu_count,
    layout,
    take_prestarted,
)
from tasks.core.training.progress import StepEvent
from tasks.core.training.runs import TrainJob, TrainResult

EXIT_PREEMPTED = 143  # 128 + SIGTERM, as a shell reports it
EXIT_BAD_INPUT = 2
STOP_GRACE_S = 120  # time the child gets to write its SIGTERM checkpoint


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _tail(path: Path, offset: int, on_event: Callable[[StepEvent], None]) -> int:
    """Hand every complete new line of ``path`` to ``on_event``; returns the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        on_event(StepEvent(**json.loads(line)))
    return offset + len(complete)


def launch(
    job: TrainJob,
    on_event: Callable[[StepEvent], None] = lambda event: None,
    gpus: int | None = None,
    poll_s: float = 0.25,
    on_start: Callable[[], None] = lambda: None,
):
    """Train in a child process; returns its TrainResult or raises why it has none.
    ``on_start`` is called once the child runs: from then on this process only waits."""
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "result.json", "error.json"):
        (folder / name).unlink(missing_ok=True)
    job_file = folder / "job.json"
    _write_json(job_file, asdict(job))
    gpus, procs = layout(job.train, gpus)
    proc = handed(take_prestarted(gpus, procs), job_file)
    if proc is None:
        proc = subprocess.Popen(command(job_file, gpus, procs), cwd=REPO_ROOT, env=child_env(procs))
    on_start()
    return _supervise(proc, folder, on_event, poll_s)


def handed(agent: subprocess.Popen | None, job_file: Path) -> subprocess.Popen | None:
    """``agent`` (started early, its imports nearly done) once it has the job; None when there
    is none or it died before taking it (a fresh one is started then)."""
    if agent is None:
        return None
    try:
        agent.stdin.write(f"{job_file}\n".encode())
        agent.stdin.close()
    except OSError:  # BrokenPipeError: it exited (its imports failed, or it was killed)
        agent.kill()
        agent.wait()
        return None
    return agent


def _supervise(proc, folder: Path, on_event, poll_s: float):
    """Relay the child's events until it exits; its TrainResult, or raise why it has none."""
    stopped = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def forward(signum, frame):
            stopped.set()
            proc.send_signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, forward)
    offset = 0
    try:
        while proc.poll() is None:
            offset = _tail(folder / "events.jsonl", offset, on_event)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(poll_s)  # returns as soon as it exits
        _tail(folder / "events.jsonl", offset, on_event)
    finally:
        if proc.poll() is None:  # the parent is failing (timeout, Ctrl-C): stop the child cleanly
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stopped.is_set() and callable(previous):
        previous(signal.SIGTERM, None)  # let the parent's own handler (Prefect's) run now
    code = proc.returncode
    if code == 0 and (folder / "result.json").is_file():
        return TrainResult(**json.loads((folder / "result.json").read_text()))
    error = {}
    if (folder / "error.json").is_file():
        error = json.loads((folder / "error.json").read_text())
    if error.get("bad_input"):
        raise TrainingInputError(error["message"])
    why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    detail = f": {error['message']}" if error.get("message") else ""
    raise TrainingProcessFailed(
        f"training process {why}{detail}; a retry resumes from the last checkpoint"
    )


def run_job(job: TrainJob) -> int:
    """The child's side: train, then write result.json or error.json; returns the exit status."""
    from tasks.core.errors import Preempted
    from tasks.core.training.run import fine_tune

    folder = job.folder
    main = os.environ.get("RANK", "0") == "0"
    events = (folder / "events.jsonl").open("a") if main else None
    _stop_when_orphaned(os.environ.get(PARENT_ENV, ""))

    def on_event(event: StepEvent) -> None:
        if events is not None:
            events.write(json.dumps(event.to_dict()) + "\n")
            events.flush()

    try:
        result = fine_tune(job, on_event=on_event)
    except Preempted as exc:
        if main:
            _write_json(folder / "error.json", {"message": str(exc), "preempted": True})
        return EXIT_PREEMPTED
    except TrainingInputError as exc:
        if main:
            _write_json(folder / "error.json", {"message": str(exc), "bad_input": True})
        return EXIT_BAD_INPUT
    except Exception as exc:
        if main:
            message = f"{type(exc).__name__}: {exc}"
            _write_json(
                folder / "error.json", {"message": message, "traceback": traceback.format_exc()}
            )
        raise
    finally:
        if events is not None:
            events.close()
        _leave_process_group()
    if main:
        _write_json(folder / "result.json", asdict(result))
    return 0


def _stop_when_orphaned(marker: str, every_s: float = 1.0) -> None:
    """SIGTERM this process (checkpoint, then stop) once the task that launched it is gone.

    A ``kill -9`` of ``loraflow run`` kills the task but not its children: without this the
    training would go on, unseen, writing to a run nobody waits for.
    """
    if not marker:
        return

    def watch() -> None:
        while parent_alive(marker):
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _leave_process_group() -> None:
    """Tear down this rank's process group before the interpreter exits.

    A rank that finishes first (rank 1 returns while rank 0 still uploads the adapter) and
    exits with the group alive lets C++ destroy a running communication thread:
    "terminate called without an active exception", SIGABRT, and the job fails.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def before_fork(job_file: str) -> None:
    """In the CPU agent, once the job came and before it forks the ranks (``agent``): what
    every rank would otherwise do alike, done once (the tokenized splits)."""
    from tasks.core.training.run import tokenize_early

    tokenize_early(TrainJob(**json.loads(Path(job_file).read_text())))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("LORAFLOW_QUIET"):  # started by the CLI without --verbose
        import warnings

        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *args, **kwargs: None
    job = TrainJob(**json.loads(Path(argv[0]).read_text()))
    skip_final_collections()  # the launcher, and the pipeline behind it, wait for this exit
    sys.exit(run_job(job))


if __name__ == "__main__":
    main()
