"""A rank for the training agent's tests: light (no torch), does what its job file says.

The job file maps a rank ("0", "1") to an action: ``exit:N`` (exit with N), ``sleep:S``,
``trap`` (on SIGTERM write ``stopped-RANK`` and exit 143; ``trapped-RANK`` once the handler
is in place; else wait up to 60 s), ``exit-when-trapped:N`` (exit with N once every other
rank's handler is in place). Every rank
first writes ``rank-RANK.json``: its pid, its parent's pid, its process name and the rendezvous variables.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path

KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BEFORE: dict = {}  # what ``before_fork`` made in the agent; a rank sees it only by inheriting it


def before_fork(job_file: str) -> None:
    """The agent's hook: counts its calls in a file; the job's ``"before"`` says to fail."""
    job = Path(job_file)
    calls = job.parent / "before-fork-calls"
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if json.loads(job.read_text()).get("before") == "fail":
        raise RuntimeError("before_fork failed on purpose")
    BEFORE["pid"] = os.getpid()


def main(argv: list[str]) -> None:
    job = Path(argv[0])
    rank = os.environ.get("RANK", "0")
    seen = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "name": Path("/proc/self/comm").read_text().strip(),
        "parent_name": Path(f"/proc/{os.getppid()}/comm").read_text().strip(),
        "mark": os.environ.get("LORAFLOW_TEST_MARK"),
        "env": {k: os.environ.get(k) for k in KEYS},
        "before_fork_pid": BEFORE.get("pid"),
        "gc_frozen": gc.get_freeze_count(),
    }
    (job.parent / f"rank-{rank}.json").write_text(json.dumps(seen))
    kind, _, arg = json.loads(job.read_text()).get(rank, "exit:0").partition(":")
    if kind == "trap":

        def stop(signum, frame):
            (job.parent / f"stopped-{rank}").write_text(str(signum))
            sys.exit(143)

        signal.signal(signal.SIGTERM, stop)
        (job.parent / f"trapped-{rank}").touch()
        time.sleep(60)
    elif kind == "exit-when-trapped":
        peers = [r for r in range(int(os.environ["WORLD_SIZE"])) if str(r) != rank]
        while not all((job.parent / f"trapped-{r}").exists() for r in peers):
            time.sleep(0.02)
        sys.exit(int(arg))
    elif kind == "sleep":
        time.sleep(float(arg))
    sys.exit(int(arg) if kind == "exit" else 0)
