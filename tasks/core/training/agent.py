"""The CPU training agent: imports the training stack once, then forks one process per rank.

Why not torchrun: each torchrun worker is a fresh interpreter that imports torch,
transformers, PEFT, accelerate and MLflow again (about 7 s of CPU each on this project's
2-core machine) after torchrun's own agent imported torch (about 2 s). Forked from one
process that imported them, every rank starts with them loaded, so the job pays for one
import instead of one per rank plus one.

The agent can start before its job exists: ``loraflow run`` starts it while it waits for
Prefect's server (``child.prestart``), so its imports overlap the pipeline's own start, and
the fine-tune task hands it the job file's path on stdin (``launcher.launch``); an agent that
gets no job (the training was cached) is stopped when the flow ends, or exits when its stdin
closes. Like torchrun, the agent fails the job as soon as one rank fails (the others get
SIGTERM, then SIGKILL after ``TERM_GRACE_S``), and it forwards a SIGTERM or SIGINT to every
rank, which checkpoint and stop after the same step; a rank whose agent dies gets SIGTERM.

Forking after these imports is what PyTorch's own DataLoader workers do on Linux: no torch
thread pool or process group exists yet (both start in the rank), and the agent opens no
socket or database before it forks. What every rank would do alike, the entry's
``before_fork`` does once here (the training tokenizes its splits: read-only memory-mapped
Arrow data the ranks inherit), and the heap is frozen for the ranks' collector first.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import socket
import sys
import time

from tasks.core.ops.preload import load

TERM_GRACE_S = 30.0  # what the other ranks get to stop after one failed, before SIGKILL
ENTRY = "tasks.core.training.launcher"  # a module whose main(argv) trains one rank
# What every rank needs at once: the training code, and MLflow's SQL store (its first client
# imports and maps ~70 tables, 1.4 s). Steps of ``tasks/core/ops/preload.py``.
PRELOAD = ("tasks.core.training.run", "tasks.core.tracking:load_sql_store")
# What a rank needs later (rank 0 plots the loss curve at the end): imported while no job
# waits, one module at a time, so a job that arrives is not held up.
PRELOAD_WHILE_IDLE = ("matplotlib.pyplot",)  # it picks no backend before the plot's Agg


def free_port() -> int:
    """A loopback port no process listens on now, for rank 0's rendezvous store."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank_env(rank: int, procs: int, port: int) -> dict[str, str]:
    """What torch.distributed's env:// rendezvous (and accelerate) read, as torchrun sets it."""
    if procs == 1:
        return {}
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "GROUP_RANK": "0",
        "WORLD_SIZE": str(procs),
        "LOCAL_WORLD_SIZE": str(procs),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _run_rank(entry, job_file: str, env: dict[str, str], agent: int) -> None:
    """In the forked child: become rank ``env['RANK']`` and train; never returns."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the training loop installs its own
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    _tie_to_agent(agent, env.get("RANK", "0"))
    os.environ.update(env)
    _torch_threads()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the agent's stdin (the job handoff) is not the rank's
    os.close(devnull)
    code = 1
    try:
        entry.main([job_file])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # what a normal interpreter exit runs
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _torch_threads() -> None:
    """``OMP_NUM_THREADS`` as this rank's torch threads. OpenMP reads it when torch loads; in
    an agent forked from the pipeline's command (``forked``) that was before the variable
    was set, so it is applied here, before any torch operation."""
    threads, torch = os.environ.get("OMP_NUM_THREADS"), sys.modules.get("torch")
    if threads and threads.isdigit() and torch is not None:
        torch.set_num_threads(int(threads))


PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15


def prctl(option: int, arg) -> bool:
    """Linux's ``prctl(option, arg)`` for this process; False where there is none."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return True


def _tie_to_agent(agent: int, rank: str) -> None:
    """Name this process ``loraflow-rankN`` (what ps, top and tests see: its environment
    in /proc is the agent's), and SIGTERM it (checkpoint, then stop) if the agent dies before
    it: a killed agent must not leave ranks training for a job nobody waits for (Linux;
    elsewhere a no-op)."""
    if not prctl(PR_SET_NAME, f"loraflow-rank{rank}".encode()):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != agent:  # the agent died before the call: nobody would tell this rank
        os.kill(os.getpid(), signal.SIGTERM)


def start_ranks(entry, job_file: str, procs: int, live: dict[int, int]) -> None:
    """Fork ``procs`` ranks into ``live`` ({pid: rank}), which the signal handlers read."""
    port = free_port() if procs > 1 else 0
    agent = os.getpid()
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # a signal now waits until ``live`` is whole
    # What the agent holds (the imports, the tokenized splits) out of the collector's reach in
    # the ranks, as Python's gc docs advise before a fork without exec: a rank's first full
    # collection walked all of it and wrote to every page it touched (copy on write), ~0.6 s
    # of its start (quickstart) before the set-up began.
    gc.freeze()
    try:
        for rank in range(procs):
            pid = os.fork()
            if pid == 0:
                _run_rank(entry, job_file, rank_env(rank, procs, port), agent)
            live[pid] = rank
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def exit_code(status: int) -> int:
    """A rank's wait status as a shell reports it (128 + signal when a signal killed it)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def forward_signals(live: dict[int, int]) -> None:
    """A SIGTERM or SIGINT to the agent goes to every rank (they checkpoint and stop)."""

    def forward(signum, frame):
        for pid in list(live):
            _signal(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


def supervise(live: dict[int, int]) -> int:
    """Wait for every rank; the job's exit status: 0, or the first failed rank's status."""
    failed = 0
    deadline = None
    while live:
        pid, status = _wait(deadline)
        if pid == 0:  # the grace after a failure ran out
            for other in live:
                _signal(other, signal.SIGKILL)
            deadline = None
            continue
        live.pop(pid, None)
        code = exit_code(status)
        if code != 0 and not failed:
            failed = code
            for other in live:  # like torchrun: one failed rank fails the job
                _signal(other, signal.SIGTERM)
            deadline = time.monotonic() + TERM_GRACE_S
    return failed


def _wait(deadline: float | None) -> tuple[int, int]:
    """The next rank to exit, (pid, status); (0, 0) once ``deadline`` passes first."""
    while True:
        if deadline is None:
            try:
                return os.waitpid(-1, 0)
            except InterruptedError:
                continue
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, status
        if time.monotonic() >= deadline:
            return 0, 0
        time.sleep(0.1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.core.training.agent")
    parser.add_argument("--procs", type=int, default=1, help="ranks to fork")
    parser.add_argument("--entry", default=ENTRY, help="module whose main(argv) trains a rank")
    parser.add_argument(
        "--preload", action="append", help=f"step to load before forking (default {PRELOAD})"
    )
    parser.add_argument("job", nargs="?", help="job file; without it, read from stdin")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop at once while nothing runs yet
    # A Ctrl-C reaches the whole terminal's process group: before a job, the command that
    # started this agent stops it (no KeyboardInterrupt traceback from here on the terminal).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    entry = preload(args.entry, PRELOAD if args.preload is None else tuple(args.preload))
    default = args.preload is None
    job_file = args.job or wait_for_job(PRELOAD_WHILE_IDLE if default else ())
    if not job_file:  # no job came: the training was cached, or the command ended
        return 0
    before_fork(entry, job_file)
    live: dict[int, int] = {}
    forward_signals(live)
    start_ranks(entry, job_file, args.procs, live)
    return supervise(live)


def before_fork(entry, job_file: str) -> None:
    """The entry's ``before_fork(job_file)``, where it has one: work every rank would do
    alike, done once here; the ranks inherit what it made. Where it fails, the ranks do the
    work themselves and fail or succeed as they would have (with the job's own error
    record), so its error is not the job's."""
    hook = getattr(entry, "before_fork", None)
    if hook is None:
        return
    try:
        hook(job_file)
    except Exception:
        import traceback

        traceback.print_exc()  # the agent's stderr: the job's log, as a rank's traceback


def preload(entry: str, steps: tuple[str, ...]):
    """Load what every rank runs, once (``preload.load`` steps); the entry module."""
    module = importlib.import_module(entry)
    for step in steps:
        load(step)
    return module


def wait_for_job(meanwhile: tuple[str, ...]) -> str:
    """The job file's path from stdin (empty when stdin closes without one); the imports a
    rank needs later run while it has not come."""
    import select

    for step in meanwhile:
        if select.select([sys.stdin], [], [], 0)[0]:
            break
        load(step)
    return sys.stdin.readline().strip()


def _exit(code: int) -> None:
    """Exit without the interpreter's final clean-up of everything imported (~2 s here,
    which the task waits for); the ranks wrote their files, nothing of the agent's is open."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
