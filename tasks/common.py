"""What every Prefect task wrapper shares: the retry policy of a cached, retried stage, and
how a stage tells the run's log what it decided."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from tasks.core.errors import is_retryable

IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


def retry_when_it_can_help(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: the error's class says whether waiting can change it.

    A refusal or bad input fails at once instead of waiting out the retry delays; I/O trouble,
    a preempted or crashed training process and any unexpected error are retried.
    """
    try:
        state.result()
    except Exception as exc:
        return is_retryable(exc)
    return True


def stage_options(**extra: Any) -> dict[str, Any]:
    """Options of a retried, cached stage (results persisted so a re-run can reuse them)."""
    return {
        **IO_RETRIES,
        "retry_condition_fn": retry_when_it_can_help,
        "persist_result": True,
        **extra,
    }


def refreshed(task, force: bool):
    """``task``, recomputing instead of reusing its cached result when ``force`` is set."""
    return task.with_options(refresh_cache=True) if force else task


STAGE_ATTR = "loraflow_stage"  # marks a record as a stage decision (the CLI shows those)


def log_decision(stage: str, message: str, level: int = logging.INFO) -> None:
    """Write a stage's decision to the Prefect run log (the UI's Logs tab).

    The first line is the decision; further lines (a gate table, data warnings) are detail
    the UI shows and the CLI, which prints the first line only, leaves out.
    """
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        logger = get_run_logger()
    except MissingContextError:  # a task function called directly (tests, notebooks)
        logger = logging.getLogger(f"loraflow.{stage}")
    logger.log(level, f"{stage}: {message}", extra={STAGE_ATTR: stage})


class TrainingWait:
    """Set once a flow run's process only waits for its training: the training processes
    started (or a remote run was submitted), or the stage returned (cached, in-process, failed).

    Work that runs beside training in this process (the base model's scoring,
    ``tasks/base_scores.py``) starts then, not before: started with the stage, its thread held
    the GIL while the stage made its MLflow calls and delayed the training's launch from ~2 s
    to ~6 s (measured on the quickstart). ``failed``: training failed, do not start at all.

    ``over``: the stage returned or failed. Work beside it then has every core: the rest of
    the base's scoring takes them (the evaluation waits for it, and the training processes
    have stopped).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._over = threading.Event()
        self.failed = False

    def now(self, failed: bool = False) -> None:
        self.failed = self.failed or failed
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def end(self, failed: bool = False) -> None:
        """The training stage returned (or failed): ``now``, and ``over`` from here on."""
        self.now(failed)
        self._over.set()

    @property
    def over(self) -> bool:
        return self._over.is_set()


_WAITS: dict[str, TrainingWait] = {}
_WAITS_LOCK = threading.Lock()


def training_wait(flow_run_id: str) -> TrainingWait:
    """The flow run's ``TrainingWait`` (one per flow run and process; a set one stays behind
    in a long-lived worker: a few hundred bytes per run)."""
    with _WAITS_LOCK:
        return _WAITS.setdefault(flow_run_id, TrainingWait())


NICE = 19  # the lowest priority: work beside the pipeline's critical path takes what it leaves


def at_low_priority(fn, *args, name: str = "low-priority"):
    """``fn(*args)`` in a thread of its own at nice ``NICE`` (a lowered priority cannot be
    raised back, so not this pool thread); its result, or its exception raised here."""
    out: dict[str, object] = {}

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: no setpriority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        try:
            out["result"] = fn(*args)
        except BaseException as exc:
            out["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["result"]
