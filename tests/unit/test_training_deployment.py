"""The fine-tune stage on a work pool: dispatched with run_deployment, result back via MLflow."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from flows.train_deployment import deployment_name, train_stage
from tasks.core.config.train import TrainSpec
from tasks.core.errors import TrainingStageFailed
from tasks.train import TrainingInputs
from tests.flows.conftest import mirrored  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_pool_without_the_deployment_says_how_to_create_it(home):
    @flow
    def pipeline():
        pool = TrainSpec(work_pool="nowhere")
        return train_stage(TrainingInputs(None, None, None, pool, None, "x", {}, None), home)

    with pytest.raises(
        TrainingStageFailed, match="python -m flows.train_deployment --pool nowhere"
    ):
        pipeline()
    assert deployment_name("gpu") == "fine-tune/gpu"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("mirrored")
def test_pipeline_trains_on_the_gpu_pool_through_a_worker(home, tmp_path):
    """A process worker of pool 'gpu' runs the deployed stage; the pipeline continues with it."""
    from prefect.workers.process import ProcessWorker

    from flows.finetune import finetune
    from flows.train_deployment import deploy
    from tasks.core.tracking import client
    from tests.flows.conftest import write_config

    with get_client(sync_client=True) as prefect:
        prefect.create_work_pool(WorkPoolCreate(name="gpu", type="process"))
    deploy("gpu")
    config = write_config(
        tmp_path,
        train={"epochs": 1, "batch_size": 8, "max_length": 16, "work_pool": "gpu"},
    )
    outcome = {}
    pipeline = threading.Thread(
        target=lambda: outcome.update(state=finetune(config_path=str(config), return_state=True))
    )
    pipeline.start()

    async def work_until_done():
        async with ProcessWorker(work_pool_name="gpu") as worker:
            while pipeline.is_alive():
                await worker.get_and_submit_flow_runs()
                await asyncio.sleep(1)

    started = time.time()
    asyncio.run(work_until_done())
    pipeline.join()
    state = outcome["state"]
    assert state.is_completed(), state.message
    mlc = client(home.tracking_uri)
    (run,) = mlc.search_runs([mlc.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_id == state.result()["run_id"]
    assert run.data.metrics["train_steps"] == 6
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs()
    stage_runs = [r for r in runs if r.name.startswith("fine-tune")]
    assert len(stage_runs) == 1 and stage_runs[0].parent_task_run_id is not None
    print(f"pipeline with the stage on a worker: {time.time() - started:.0f} s")
