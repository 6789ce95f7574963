"""A training child for tests: one rank signals itself at a chosen step and moment.

Run by the training agent in place of ``tasks.core.training.launcher`` (same job file, same code), with
``LORAFLOW_TEST_SIGNAL=RANK:STEP:MOMENT:SIGNAL``. The moments, around step STEP's gradient and
stop-flag exchange (``StepSync.all_reduce``, the one collective of a step):

- ``before``: the signal is already there when the step reads its stop flag (sent right after
  the previous step's exchange: nothing else reads the flag in between);
- ``window``: after the flag was read, before the exchange (the race issue 18 found);
- ``after``: after the exchange returned (a signal that lands *during* the C++ collective runs
  its Python handler here too, once the call returns).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

from tasks.core.errors import Preempted
from tasks.core.training import grad_sync, launcher
from tasks.core.training import run as training


def install(spec: str, folder: Path) -> None:
    target, step, moment, name = spec.split(":")
    rank, step, signum = int(os.environ.get("RANK", "0")), int(step), getattr(signal, name)
    record_stop(folder, rank)
    if rank != int(target):
        return

    def send() -> None:
        (folder / f"signalled-{rank}.json").write_text(
            json.dumps({"time": time.time(), "monotonic": time.monotonic()})
        )
        os.kill(os.getpid(), signum)

    original = grad_sync.StepSync.all_reduce
    calls = itertools.count(1)

    def all_reduce(self, stop: bool) -> bool:
        n = next(calls)
        if n == step and moment == "window":
            send()
        result = original(self, stop)
        if (n == step and moment == "after") or (n == step - 1 and moment == "before"):
            send()
        return result

    grad_sync.StepSync.all_reduce = all_reduce


def record_stop(folder: Path, rank: int) -> None:
    """Each rank writes the step it stopped after (only rank 0 writes the job's error.json)."""
    original = training.fine_tune

    def fine_tune(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except Preempted as exc:
            (folder / f"stopped-{rank}.json").write_text(json.dumps({"step": exc.step}))
            raise

    training.fine_tune = fine_tune


def main(argv: list[str]) -> None:
    """A rank's entry point for the training agent (``--entry tests.unit.signal_child``)."""
    install(os.environ["LORAFLOW_TEST_SIGNAL"], Path(argv[0]).parent)
    launcher.main(argv)
