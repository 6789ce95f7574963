"""What every Prefect task wrapper shares: the retry policy of a cached, retried stage."""

from __future__ import annotations

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
