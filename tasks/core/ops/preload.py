"""Imports done ahead, where a process would otherwise wait: seconds off the critical path.

A step is ``"module"`` (imported) or ``"module:function"`` (imported, then the function called
with no arguments), so a caller names what to load without importing it itself. Used by the
CLI while it waits for Prefect's server, by the pipeline process while the training
processes compute, and by the training agent before it forks its ranks.

A background preload must be finished before other code of the process imports the same
packages: two threads importing one package can hand one of them a half-imported module.
Seen: ``datasets``' hashing read ``transformers.PreTrainedTokenizerBase`` while a preload
thread was importing transformers, and the data stage failed with an AttributeError. Hence
``settle``, for a stage that runs beside a preload (or after it, before it could be done).
"""

from __future__ import annotations

import contextlib
import importlib
import threading

_STARTED: list[threading.Thread] = []


def load(step: str) -> None:
    """Import a ``"module"``, or import ``"module:function"`` and call the function."""
    module, _, function = step.partition(":")
    loaded = importlib.import_module(module)
    if function:
        getattr(loaded, function)()


def in_background(name: str, *steps: str) -> threading.Thread:
    """``load`` each step in order in a daemon thread named ``name``. A step that fails is
    skipped: the stage that needs the module imports it again and reports the error."""

    def run() -> None:
        for step in steps:
            with contextlib.suppress(Exception):
                load(step)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    _STARTED[:] = [t for t in _STARTED if t.is_alive()] + [thread]
    return thread


def settle() -> None:
    """Wait for every background preload of this process (other than the calling thread):
    before a stage that runs beside one imports what it may be importing."""
    current = threading.current_thread()
    for thread in list(_STARTED):
        if thread is not current:
            thread.join()
