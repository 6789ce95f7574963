"""The Prefect server's scheduler creates a deployment's runs by itself, and a worker runs one.

Against the shared stack (``loraflow up --detach`` + ``loraflow deploy``, tests/ops/conftest.py),
whose server runs its scheduler service every ``SCHEDULER_LOOP_SECONDS``. Nothing here asks
the API to schedule anything (no ``deployment run``, no ``/schedule`` call): every run under
test is one the scheduler created (``auto_scheduled``, ``created_by`` the schedule). On a
dependency set that breaks the scheduler (Prefect 3.8 on SQLAlchemy 2.1) the deployment shows
its schedule and no run ever appears: these tests fail on that, and on any scheduler traceback
in the server's log.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import islice

from cronsim import CronSim
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort

from flows.cli.stack import prefect_client
from tasks.core.ops import scheduler_health
from tests.ops.conftest import BIN, CRON, SCHEDULER_LOOP_SECONDS, run, wait_for

DEPLOYMENT = "finetune/tiny-test"
# How far ahead the test's one-off run is due: many scheduler cycles to create it in time (a
# run whose time has passed is never created), even on a busy machine; the worker starts it
# 10 s before it is due (its prefetch), so the test waits about LEAD_SECONDS - 10 s for it.
LEAD_SECONDS = 20


def _by_scheduler(run, schedule_id) -> bool:
    """A run the scheduler service created for this schedule (never one made through the API)."""
    return (
        run.auto_scheduled
        and run.created_by is not None
        and run.created_by.type == "SCHEDULE"
        and run.created_by.id == schedule_id
    )


def _runs(api: str, deployment_id, *states: StateType) -> list:
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states))) if states else None
    with prefect_client(api) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]), state=state
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=100,
        )


def _server_health(stack) -> scheduler_health.ServerHealth:
    return scheduler_health.scan_file(stack.home.root / "logs" / "prefect-server.log")


def _wait_for_scheduler(stack, predicate, timeout: float, what: str):
    """``wait_for``, whose timeout says what the server's log holds about its scheduler."""
    try:
        return wait_for(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {_server_health(stack).scheduler_line()}") from None


def test_scheduler_creates_the_upcoming_runs_of_the_deployed_cron(stack):
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    [schedule] = deployment.schedules

    def upcoming():
        runs = _runs(stack.api, deployment.id, StateType.SCHEDULED)
        runs = [r for r in runs if _by_scheduler(r, schedule.id)]
        return runs if len(runs) >= 3 else None

    runs = _wait_for_scheduler(
        stack, upcoming, 10 * SCHEDULER_LOOP_SECONDS, f"the scheduler to create the runs of {CRON}"
    )
    # The scheduler's defaults: at least 3 runs ahead, the cron's next Mondays at 03:00 UTC.
    expected = list(islice(CronSim(CRON, datetime.now(UTC)), 3))
    assert [r.expected_start_time.astimezone(UTC) for r in runs[:3]] == expected
    assert all(r.state.name == "Scheduled" and r.work_pool_name == "cpu" for r in runs)
    assert all(r.parameters == deployment.parameters for r in runs)
    health = _server_health(stack)
    assert health.scheduler_errors == (), health.scheduler_line()


def test_a_scheduled_run_fires_and_the_worker_completes_it(stack):
    """A schedule due in seconds: the scheduler creates the run, the worker runs it to the end.

    The run is the deployed finetune flow with its default parameters, so every stage is a
    cache hit of the run the stack fixture made: seconds, no training.
    """
    due = (datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)).replace(microsecond=0)
    # Hourly, anchored an hour before `due`: the next run is at `due`, the one after in an hour.
    hourly = IntervalSchedule(interval=timedelta(hours=1), anchor_date=due - timedelta(hours=1))
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        [added] = client.create_deployment_schedules(deployment.id, [(hourly, True)])
    try:

        def created():
            runs = _runs(stack.api, deployment.id)
            return [r for r in runs if _by_scheduler(r, added.id) and r.expected_start_time == due]

        [fired] = _wait_for_scheduler(
            stack, created, LEAD_SECONDS, f"the scheduler to create the run due {due}"
        )

        def final():
            with prefect_client(stack.api) as client:
                current = client.read_flow_run(fired.id)
            return current if current.state.is_final() else None

        done = wait_for(final, 240, "the worker to pick up the scheduled run and finish it")
        with prefect_client(stack.api) as client:
            history = client.read_flow_run_states(fired.id)
    finally:
        with prefect_client(stack.api) as client:  # also deletes its runs still scheduled
            client.delete_deployment_schedule(deployment.id, added.id)

    assert done.state.is_completed(), f"{done.state.name}: {done.state.message}"
    first, *_ = sorted(history, key=lambda s: s.timestamp)
    assert first.type == StateType.SCHEDULED and first.state_details.scheduled_time == due
    assert [s.type for s in sorted(history, key=lambda s: s.timestamp)][-3:] == [
        StateType.PENDING,
        StateType.RUNNING,
        StateType.COMPLETED,
    ]
    assert done.work_pool_name == "cpu" and done.parameters == deployment.parameters
    # The stack's worker is the one that picked it up.
    worker_log = (stack.home.root / "logs" / "worker-cpu.log").read_text(errors="replace")
    assert str(fired.id) in worker_log
    health = _server_health(stack)
    assert health.scheduler_errors == (), health.scheduler_line()


def test_status_reports_the_scheduler_of_the_running_stack(stack):
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    [schedule] = deployment.schedules

    def three_ahead():  # the cron's runs, created again after the test above removed its own
        runs = _runs(stack.api, deployment.id, StateType.SCHEDULED)
        return len([r for r in runs if _by_scheduler(r, schedule.id)]) == 3

    _wait_for_scheduler(stack, three_ahead, 10 * SCHEDULER_LOOP_SECONDS, "the cron's 3 runs")
    assert "PREFECT_API_URL" not in stack.env  # as a user runs it on the stack's home
    out = run([str(BIN / "loraflow"), "status"], stack.env, timeout=120)
    assert f"prefect: {stack.api}" in out, out  # the stack's server, not one of its own
    log = stack.home.root / "logs" / "prefect-server.log"
    assert f"no scheduler errors in {log} since the server started" in out, out
    [line] = [line for line in out.splitlines() if line.startswith("scheduler ")]
    # Every deployment of the shared stack counts (other tests deploy scheduled flows on it,
    # e.g. the game day's monitor): this cron's 3 runs are among them.
    found = re.match(r"scheduler {4}ok: (\d+) upcoming scheduled run\(s\)", line)
    assert found and int(found.group(1)) >= 3, line
