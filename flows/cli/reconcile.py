"""Reconcile what the stores say is running with what really runs on this machine.

A flow run whose process died without a word (``kill -9``, the OOM killer) stays ``Running``
in Prefect, its task runs too, its MLflow runs stay ``RUNNING`` and a canary it led keeps its
traffic lease. ``loraflow status``, ``run`` and ``promote`` call ``reconcile`` first: every
flow run recorded by a process of this machine that is gone is set Crashed (with its
unfinished task runs), its MLflow runs KILLED, its lease ended with a record; an expired
lease is ended whoever held it. Flow runs of other machines are left to their workers
(Prefect marks a worker's crashed process itself).
"""

from __future__ import annotations

import time

from tasks.core.home import Home
from tasks.core.ops import processes


def _crash(prefect, flow_run, why: str) -> int:
    """Set a flow run and its unfinished task runs Crashed; how many task runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Crashed

    prefect.set_flow_run_state(flow_run.id, Crashed(message=why), force=True)
    tasks = prefect.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])), limit=200
    )
    unfinished = [t for t in tasks if t.state is None or not t.state.is_final()]
    for task_run in unfinished:
        prefect.set_task_run_state(task_run.id, Crashed(message=why), force=True)
    return len(unfinished)


def reconcile(home: Home, tracking=None) -> list[str]:
    """Fix what a dead process left behind; one line per fix (nothing to say: [])."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks.core.ops.reconcile import end_orphan_leases, kill_runs_of

    lines, dead_flow_runs = [], []
    with get_client(sync_client=True) as prefect:
        for record in processes.records(home):
            try:
                flow_run = prefect.read_flow_run(record.flow_run_id)
            except ObjectNotFound:
                processes.forget(home, record.flow_run_id)
                continue
            if flow_run.state is not None and flow_run.state.is_final():
                processes.forget(home, record.flow_run_id)
                continue
            if processes.is_alive(record) is not False:
                continue  # running, or on another machine
            why = f"its process {record.pid} on {record.host} is gone (killed without a word)"
            count = _crash(prefect, flow_run, why)
            lines.append(f"flow run {flow_run.name}: Running -> Crashed ({count} task runs): {why}")
            dead_flow_runs.append(record.flow_run_id)
            processes.forget(home, record.flow_run_id)
    if tracking is None and not home.mlflow_db.exists() and home.tracking_uri.startswith("sqlite"):
        return lines
    mlc = tracking or _client(home)
    dead_holders = set()
    for flow_run_id in dead_flow_runs:
        for run_id in kill_runs_of(mlc, flow_run_id):
            lines.append(f"MLflow run {run_id}: RUNNING -> KILLED (its flow run crashed)")
            dead_holders.add(run_id)
    for ended in end_orphan_leases(mlc, dead_holders, time.time()):
        lines.append(f"canary of {ended}: lease ended, traffic back to the champion (recorded)")
    return lines


def _client(home: Home):
    from tasks.core.tracking import client

    return client(home.tracking_uri)
