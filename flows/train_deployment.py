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
from dataclasses import asdict, replace
from pathlib import Path

from prefect import flow
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run as flow_run_context

from tasks.common import refreshed, training_wait
from tasks.core.errors import TrainingStageFailed
from tasks.core.home import REPO_ROOT, Home
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training.runs import TrainResult, latest_finished_run, result_from_run
from tasks.train import TrainingInputs, train_adapter

FLOW_NAME = "fine-tune"
ENTRYPOINT = "flows/train_deployment.py:fine_tune_stage"


def deployment_name(pool: str) -> str:
    """The deployment the pipeline runs for ``train.work_pool: POOL`` (one per pool)."""
    return f"{FLOW_NAME}/{pool}"


@flow(
    name=FLOW_NAME,
    flow_run_name="fine-tune {inputs.model.repo_id} on {inputs.data.fingerprint:.12}",
)
def fine_tune_stage(inputs: TrainingInputs, force: bool = False) -> dict:
    """Fine-tune on this worker; the adapter lands in the MLflow run, the summary is returned."""
    home = Home.from_env().ensure()
    local = replace(inputs, train=inputs.train.model_copy(update={"work_pool": None}))
    return asdict(
        refreshed(train_adapter, force)(local, home)
    )  # ``local``: this *is* the pool's worker


def train_stage(inputs: TrainingInputs, home: Home, force: bool = False) -> TrainResult:
    """The training stage of the pipeline: in-process, or the deployment on ``train.work_pool``.

    ``force`` recomputes instead of reusing a cached training (``run --force``). When it
    returns or fails, work waiting beside training (``training_wait``) is let go.
    """
    waiting = training_wait(str(flow_run_context.get_id() or ""))
    try:
        result = _train(inputs, home, force, waiting)
    except BaseException:
        waiting.end(failed=True)
        raise
    waiting.end()
    return result


def _train(inputs: TrainingInputs, home: Home, force: bool, waiting) -> TrainResult:
    pool = inputs.train.work_pool
    if not pool:
        return refreshed(train_adapter, force)(inputs, home)
    name = deployment_name(pool)
    params = {"inputs": inputs, "force": force}
    waiting.now()  # the training runs on a worker; this process only waits for it
    try:
        flow_run = run_deployment(name=name, parameters=params, as_subflow=True, timeout=None)
    except ObjectNotFound:
        raise TrainingStageFailed(
            f"train.work_pool is {pool!r} but deployment {name!r} does not exist: "
            f"run `python -m flows.train_deployment --pool {pool}` once"
        ) from None
    if not flow_run.state or not flow_run.state.is_completed():
        state = flow_run.state.name if flow_run.state else "unknown"
        message = flow_run.state.message if flow_run.state else ""
        raise TrainingStageFailed(f"training deployment {name} ended {state}: {message}")
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, inputs.registry.experiment, home.mlflow_artifacts)
    identity = inputs.identity(home)
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
