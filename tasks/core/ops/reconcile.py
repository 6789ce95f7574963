"""The MLflow side of reconciling runs whose process died: runs marked KILLED, leases ended.

The Prefect side (flow and task runs set Crashed) is in ``flows/cli/reconcile.py``; this
module never imports Prefect. Both are driven by the process records of ``processes.py``.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tasks.core.promotion.canary_io import expire_lease, read_lease
from tasks.core.promotion.lease import routing
from tasks.core.registry.history import actor_cli


def kill_runs_of(mlc: MlflowClient, flow_run_id: str) -> list[str]:
    """Mark KILLED every RUNNING MLflow run a dead flow run owned (training, canary)."""
    experiments = [e.experiment_id for e in mlc.search_experiments()]
    if not experiments or not flow_run_id:
        return []
    runs = mlc.search_runs(
        experiments,
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}' AND "
        "attributes.status = 'RUNNING'",
    )
    killed = []
    for run in runs:
        mlc.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
    return killed


def end_orphan_leases(mlc: MlflowClient, dead_holders: set[str], now: float) -> list[str]:
    """End each canary lease that expired or whose holder's process is known dead; record it."""
    ended = []
    for model in mlc.search_registered_models():
        lease = read_lease(mlc, model.name)
        if lease is None or lease.ended:
            continue
        dead = lease.holder in dead_holders
        if routing(lease, now, 0.0).state == "expired" or dead:
            actor = f"reconciler ({actor_cli()})"
            if expire_lease(mlc, model.name, lease, actor, holder_dead=dead):
                ended.append(f"{model.name} v{lease.version}")
    return ended
