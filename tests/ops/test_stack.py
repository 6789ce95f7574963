"""``loraflow up`` / ``deploy`` / ``emit-event`` against real servers and a real worker."""

from __future__ import annotations

import httpx
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.cli.stack import prefect_client
from tasks.core.ops import stack as plan
from tests.ops.conftest import BIN, CRON, run, wait_for


def test_up_starts_servers_worker_and_pools(stack):
    assert f"Prefect UI   {stack.urls.prefect}" in stack.up_output
    assert f"MLflow UI    {stack.urls.mlflow}" in stack.up_output
    # Embedded mode asks nobody for credentials (loopback only), and says so.
    assert "auth         none: embedded mode, loopback only" in stack.up_output
    search = f"{stack.urls.mlflow}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search).status_code == 200
    state = plan.read_state(stack.home)
    assert [p.name for p in state.processes] == ["prefect-server", "mlflow-server", "worker-cpu"]
    assert "<title>Prefect" in httpx.get(stack.urls.prefect).text  # the UI is served
    assert httpx.get(f"{stack.urls.mlflow}/health").text.strip() == "OK"
    with prefect_client(stack.api) as client:
        pools = {pool.name: pool.type for pool in client.read_work_pools()}
        workers = client.read_workers_for_work_pool("cpu", offset=0, limit=10)
    assert pools == {"cpu": "process", "gpu": "process"}
    assert [w.name for w in workers] == [plan.worker_name("cpu")]


def test_deploy_registers_schedule_typed_parameters_and_triggers(stack):
    assert "deployed finetune/tiny-test: cron '0 3 * * 1' (UTC), pool cpu" in stack.deploy_output
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name("finetune/tiny-test")
        automations = client.read_automations_by_name("tiny-test: retrain on drift.detected")
    assert deployment.work_pool_name == "cpu"
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
        CRON,
        "UTC",
        True,
    )
    # Typed parameters: the UI renders a text field and a switch from this schema.
    properties = deployment.parameter_openapi_schema["properties"]
    assert properties["config_path"]["type"] == "string"
    assert properties["force"]["type"] == "boolean"
    assert deployment.parameters == {"config_path": str(stack.config), "force": False}
    [automation] = automations
    assert automation.trigger.expect == {"loraflow.drift.detected"}
    assert automation.actions[0].parameters == {"config_path": str(stack.config), "force": True}


def test_deployment_run_completes_through_the_worker(stack):
    from mlflow.tracking import MlflowClient

    with prefect_client(stack.api) as client:
        run_ = client.read_flow_run(stack.flow_run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[stack.flow_run_id])), limit=20
        )
        workers = client.read_workers_for_work_pool("cpu", offset=0, limit=10)
    assert run_.state.is_completed()
    assert run_.work_pool_name == "cpu" and run_.deployment_id is not None
    assert run_.name.startswith("tiny-test: loraflow-test/tiny-bert on tiny @ ")
    assert len(tasks) >= 7 and all(t.state.is_completed() for t in tasks)
    assert workers[0].last_heartbeat_time is not None
    uri = stack.env["MLFLOW_TRACKING_URI"]
    model = MlflowClient(uri, registry_uri=uri).get_registered_model("tiny-lora")
    assert model.aliases.get("champion") == 1


def test_drift_event_starts_a_forced_retraining_run(stack):
    out = run([str(BIN / "loraflow"), "emit-event", "drift.detected", str(stack.config)], stack.env)
    assert "emitted loraflow.drift.detected on loraflow.model.tiny-lora" in out

    def triggered():
        with prefect_client(stack.api) as client:
            runs = client.read_flow_runs(limit=20)
        return [r for r in runs if r.parameters.get("force") is True]

    [retrain] = wait_for(triggered, 60, "the automation to create a retraining run")
    assert retrain.parameters["config_path"] == str(stack.config)
    assert retrain.created_by and retrain.created_by.type == "AUTOMATION"
    # The worker would now retrain from scratch; that path is the test above. Cancel it.
    from prefect.states import Cancelling

    with prefect_client(stack.api) as client:
        client.set_flow_run_state(retrain.id, Cancelling(), force=True)
