"""The fine-tune stage as a flow of its own, so it can run on a work pool with GPUs.

The pipeline calls ``train_stage``. Without ``train.work_pool`` that is the ``fine-tune`` task
in the pipeline's own process (as every other stage). With ``train.work_pool: gpu`` it is
``run_deployment('fine-tune/gpu')``: a worker of that pool runs this flow, which runs the same
task there. Only references cross: the parameters are the stage's inputs (repo@sha, dataset
fingerprint and prepared path, config sections), and the result comes back through MLflow -
the pipeline finds the finished run by the training identity and evaluation downloads the
adapter from the run's artifacts. The worker needs the same MLflow store
(``MLFLOW_TRACKING_URI``) and the prepared data path (shared storage).

Deploy once per pool: ``python -m flows.train_deployment --pool gpu`` (a ``process`` pool on a
GPU host; the same flow works in a Docker or Kubernetes pool whose image holds this repo).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from tasks.core.audit.licenses import AuditRecord
from tasks.core.catalog.base import Candidate
from tasks.core.config.experiment import RegistrySpec
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.data.report import DataReport
from tasks.core.errors import TrainingStageFailed
from tasks.core.home import REPO_ROOT, Home
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training.run import TrainResult, latest_finished_run, result_from_run
from tasks.train import train_adapter, training_identity

FLOW_NAME = "fine-tune"
ENTRYPOINT = "flows/train_deployment.py:fine_tune_stage"


def deployment_name(pool: str) -> str:
    """The deployment the pipeline runs for ``train.work_pool: POOL`` (one per pool)."""
    return f"{FLOW_NAME}/{pool}"


@flow(name=FLOW_NAME, flow_run_name="fine-tune {model.repo_id} on {data.fingerprint:.12}")
def fine_tune_stage(
    model: Candidate,
    data: DataReport,
    lora: LoraSpec,
    train: TrainSpec,
    registry: RegistrySpec,
    experiment_name: str,
    lineage: dict[str, str],
    audit: AuditRecord,
    force: bool = False,
) -> dict:
    """Fine-tune on this worker; the adapter lands in the MLflow run, the summary is returned."""
    home = Home.from_env().ensure()
    stage = train_adapter.with_options(refresh_cache=True) if force else train_adapter
    local = train.model_copy(update={"work_pool": None})  # this *is* the pool's worker
    return asdict(stage(model, data, lora, local, registry, experiment_name, lineage, audit, home))


def stage_parameters(model, data, lora, train, registry, experiment_name, lineage, audit, force):
    return {
        "model": model,
        "data": data,
        "lora": lora,
        "train": train,
        "registry": registry,
        "experiment_name": experiment_name,
        "lineage": lineage,
        "audit": audit,
        "force": force,
    }


def train_stage(
    task,
    model: Candidate,
    data: DataReport,
    lora: LoraSpec,
    train: TrainSpec,
    registry: RegistrySpec,
    experiment_name: str,
    lineage: dict[str, str],
    audit: AuditRecord,
    home: Home,
) -> TrainResult:
    """The training stage of the pipeline: in-process, or the deployment on ``train.work_pool``.

    ``task`` is the ``fine-tune`` task as the pipeline configured it (``refresh_cache`` under
    ``--force``); the deployment receives that choice as its ``force`` parameter.
    """
    if not train.work_pool:
        return task(model, data, lora, train, registry, experiment_name, lineage, audit, home)
    force = bool(getattr(task, "refresh_cache", False))
    name = deployment_name(train.work_pool)
    params = stage_parameters(
        model, data, lora, train, registry, experiment_name, lineage, audit, force
    )
    try:
        flow_run = run_deployment(name=name, parameters=params, as_subflow=True, timeout=None)
    except ObjectNotFound:
        raise TrainingStageFailed(
            f"train.work_pool is {train.work_pool!r} but deployment {name!r} does not exist: "
            f"run `python -m flows.train_deployment --pool {train.work_pool}` once"
        ) from None
    if not flow_run.state or not flow_run.state.is_completed():
        state = flow_run.state.name if flow_run.state else "unknown"
        message = flow_run.state.message if flow_run.state else ""
        raise TrainingStageFailed(f"training deployment {name} ended {state}: {message}")
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, registry.experiment, home.mlflow_artifacts)
    identity = training_identity(model, data, lora, train, registry, home)
    run = latest_finished_run(mlc, experiment_id, identity)
    if run is None:
        raise TrainingStageFailed(f"{name} completed but MLflow holds no finished run {identity}")
    return result_from_run(run)


def deploy(pool: str, source: Path = REPO_ROOT):
    """Register ``fine-tune/POOL``: this flow, from ``source``, on work pool ``pool``."""
    return flow.from_source(source=str(source), entrypoint=ENTRYPOINT).deploy(
        name=pool,
        work_pool_name=pool,
        description="The loraflow fine-tune stage; the finetune pipeline runs it when "
        f"train.work_pool is {pool!r}.",
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deploy the fine-tune stage to a work pool.")
    parser.add_argument("--pool", default="gpu", help="Prefect work pool (default: gpu)")
    args = parser.parse_args(argv)
    deployment_id = deploy(args.pool)
    print(f"deployed {deployment_name(args.pool)} on pool {args.pool!r} ({deployment_id})")


if __name__ == "__main__":
    main()
