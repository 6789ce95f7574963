"""The stack's plan and the schedule section, as plain data: no server is started here."""

from __future__ import annotations

import socket
import subprocess

import pytest
from pydantic import ValidationError

from tasks.core.config.loader import load_config
from tasks.core.config.schedule import ScheduleSpec
from tasks.core.home import Home
from tasks.core.ops import stack
from tests.conftest import REPO
from tests.flows.conftest import write_config
from tests.ops.conftest import BIN


def test_plan_orders_processes_and_points_each_at_the_right_place(tmp_path):
    home = Home(tmp_path)
    base = {"PATH": "/usr/bin", "PREFECT_API_URL": "http://elsewhere/api"}
    urls, specs = stack.plan(
        home, "/py", prefect_port=4300, mlflow_port=5300, pools=("cpu", "gpu"), base_env=base
    )
    assert [s.name for s in specs] == [
        "prefect-server",
        "mlflow-server",
        "worker-cpu",
        "worker-gpu",
    ]
    server, mlflow, cpu, gpu = specs
    assert server.argv[:5] == ("/py", "-m", "prefect", "server", "start")
    assert "PREFECT_API_URL" not in server.env  # a server serves its own database
    assert server.env["PREFECT_UI_API_URL"] == urls.prefect_api == "http://127.0.0.1:4300/api"
    assert server.env["PREFECT_HOME"] == str(home.prefect_home)
    assert server.health_url == "http://127.0.0.1:4300/api/health"
    assert (
        mlflow.argv[mlflow.argv.index("--backend-store-uri") + 1] == f"sqlite:///{home.mlflow_db}"
    )
    assert mlflow.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow.health_url == "http://127.0.0.1:5300/health"
    assert cpu.env["PREFECT_API_URL"] == urls.prefect_api and cpu.health_url is None
    assert gpu.argv[gpu.argv.index("--pool") : gpu.argv.index("--pool") + 2] == ("--pool", "gpu")
    assert cpu.log == home.root / "logs" / "worker-cpu.log"
    assert urls.registered_model("m") == "http://127.0.0.1:5300/#/models/m"
    assert urls.flow_run("x") == "http://127.0.0.1:4300/runs/flow-run/x"


def test_plan_uses_a_remote_mlflow_server_instead_of_starting_one(tmp_path):
    base = {"MLFLOW_TRACKING_URI": "https://mlflow.example/"}
    urls, specs = stack.plan(Home(tmp_path), "/py", base_env=base)
    assert [s.name for s in specs] == ["prefect-server", "worker-cpu"]
    assert urls.mlflow is None
    assert specs[1].env["MLFLOW_TRACKING_URI"] == "https://mlflow.example/"


def test_deployment_plan_from_a_config(tmp_path):
    config = write_config(
        tmp_path, schedule={"cron": "30 2 * * *", "timezone": "Europe/Berlin", "active": False}
    )
    plan = stack.deployment_plan(load_config(config).config, config, REPO)
    assert (plan.name, plan.full_name) == ("tiny-test", "finetune/tiny-test")
    assert plan.config_path == str(config.resolve())  # outside the repo: absolute
    assert (plan.cron, plan.timezone, plan.active, plan.work_pool) == (
        "30 2 * * *",
        "Europe/Berlin",
        False,
        "cpu",
    )
    assert [(t.event, t.resource_id, t.force) for t in plan.triggers] == [
        ("loraflow.data.updated", "loraflow.dataset.tiny", False),
        ("loraflow.drift.detected", "loraflow.model.tiny-lora", True),
    ]
    assert plan.parameters() == {"config_path": str(config.resolve()), "force": False}

    quickstart = REPO / "configs/experiments/sst2-minilm-lora.yaml"
    shipped = stack.deployment_plan(load_config(quickstart).config, quickstart, REPO)
    assert shipped.config_path == "configs/experiments/sst2-minilm-lora.yaml"  # repo-relative
    assert shipped.cron and shipped.work_pool == "cpu"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 25 * * 1"}, "Bad hour"),
        ({"cron": "0 3 * *"}, "needs 5 fields"),
        ({"timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"work_pool": "tpu"}, "'cpu' or 'gpu'"),
        ({"retrain_on": ["data.changed"]}, "'data.updated', 'drift.detected' or 'model.stale'"),
        ({"every": "day"}, "Extra inputs are not permitted"),
    ],
)
def test_schedule_section_rejects(fields, message):
    with pytest.raises(ValidationError, match=message):
        ScheduleSpec(**fields)


def test_schedule_defaults_deploy_without_a_cadence():
    spec = ScheduleSpec()
    assert (spec.cron, spec.timezone, spec.work_pool) == (None, "UTC", "cpu")
    assert spec.retrain_on == ("data.updated", "drift.detected")


def test_state_file_round_trip_and_api_url_precedence(tmp_path):
    home = Home(tmp_path)
    assert stack.read_state(home) is None and stack.api_url(home, {}) is None
    state = stack.StackState(
        "http://127.0.0.1:4300",
        "http://127.0.0.1:5300",
        "sqlite:///x.db",
        ("cpu",),
        (stack.Started("worker-cpu", 42, 1.5, "/log"),),
        ready=True,
    )
    stack.write_state(home, state)
    assert stack.read_state(home) == state
    assert stack.api_url(home, {}) == "http://127.0.0.1:4300/api"
    assert stack.api_url(home, {"PREFECT_API_URL": "http://other/api"}) == "http://other/api"
    assert any("worker-cpu" in line and "pid 42" in line for line in stack.status_lines(state))


def test_port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert stack.port_in_use("127.0.0.1", sock.getsockname()[1])
    assert not stack.port_in_use("127.0.0.1", stack.free_port())


def test_deploy_and_emit_without_a_server_say_how_to_start_one(tmp_path):
    config = write_config(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "LORAFLOW_HOME": str(tmp_path / "home")}
    for args in (["deploy", str(config)], ["emit-event", "data.updated", str(config)]):
        done = subprocess.run(
            [str(BIN / "loraflow"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert "no Prefect server: start one with `loraflow up`" in done.stderr
