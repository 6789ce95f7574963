"""The CPU training agent forked from the command that runs the pipeline, not started fresh.

``loraflow run`` imports MLflow and its SQL store, transformers' tokenizer code, ``datasets``
and Prefect for its own stages anyway. A fresh agent imports them again before torch, PEFT
and the training code, on a path where both cores are busy until the first training step. So
the command forks the agent once its own imports are done, before it starts anything of its
own that runs beside it; the agent then imports only what the command does not use before
training (torch, PEFT, the training loop).

A fork is only taken where it is safe: on Linux, from a process whose only Python thread is
the calling one (native pools of OpenBLAS and jemalloc re-initialise after a fork; tqdm's
monitor thread is stopped first), and before the command opens a database connection or runs
a torch operation. Elsewhere ``fork_agent`` returns None and the caller starts a fresh agent.
The forked agent drops the command's exit handlers (the temporary server's stop), reads its
job from a pipe as a fresh one reads stdin, and names itself ``loraflow-agent``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time

from tasks.core.home import REPO_ROOT

AGENT_NAME = "loraflow-agent"


class ForkedAgent:
    """What the launcher uses of ``subprocess.Popen``, for an agent this process forked."""

    def __init__(self, pid: int, stdin):
        self.pid, self.stdin, self.returncode = pid, stdin, None
        self.args = [AGENT_NAME]

    def poll(self) -> int | None:
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
        deadline, delay = time.monotonic() + timeout, 0.0005
        while self.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)  # as Popen.wait: prompt at first, then 20 polls a second
        return self.returncode

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except InterruptedError:
            return
        except ChildProcessError:  # reaped elsewhere: gone, its status unknown
            self.returncode = 255
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_agent(args: list[str], env: dict[str, str]) -> ForkedAgent | None:
    """The training agent (its command-line ``args``, environment ``env``) as a fork of this
    process, reading its job from a pipe; None where a fork is not safe here (then start a
    fresh one)."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        return None
    _stop_tqdm_monitor()
    if threading.active_count() > 1:
        return None
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered before the fork is written twice
    gc.freeze()  # the agent's collections skip what it inherits (no copy-on-write walk of it)
    pid = os.fork()
    if pid == 0:
        os.close(write)
        _become_agent(read, args, env)
    gc.unfreeze()
    os.close(read)
    return ForkedAgent(pid, os.fdopen(write, "wb"))


def _become_agent(job_pipe: int, args: list[str], env: dict[str, str]) -> None:
    """In the forked child: run the agent with the pipe as stdin; never returns."""
    code = 1
    try:
        import atexit

        atexit._clear()  # the command's exit handlers (its temporary server's stop) stay its own
        os.dup2(job_pipe, 0)
        os.close(job_pipe)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 lives as long as the process
        os.environ.clear()
        os.environ.update(env)
        os.chdir(REPO_ROOT)
        from tasks.core.training import agent

        agent.prctl(agent.PR_SET_NAME, AGENT_NAME.encode())  # what ps and top show
        code = agent.main(args)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop_tqdm_monitor() -> None:
    """tqdm's monitor thread (started by the first progress bar, on whichever tqdm class drew
    it) is not needed by the agent; stopped, it restarts with the next bar."""
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is None:
        return
    for thread in threading.enumerate():
        if isinstance(thread, tqdm_std.TMonitor):
            with contextlib.suppress(Exception):
                thread.exit()
