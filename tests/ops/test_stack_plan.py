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
    # The store goes by environment: a PostgreSQL URI holds a password, argv is public (ps).
    assert "--backend-store-uri" not in mlflow.argv and "--app-name" not in mlflow.argv
    assert mlflow.env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{home.mlflow_db}"
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


def _auth(tmp_path):
    from tasks.core.ops.auth import StackAuth
    from tasks.core.security import envfile

    return StackAuth(envfile.generate(), tmp_path / "secrets.env")


def test_authenticated_plan_gives_each_process_only_its_own_secrets_by_environment(tmp_path):
    home, auth = Home(tmp_path), _auth(tmp_path)
    secrets = {v for v in auth.values.values() if v}
    leaked = {"PATH": "/usr/bin", "MLFLOW_TRACKING_PASSWORD": "from-the-shell-0123456789"}
    postgres = "postgresql+psycopg2://loraflow:db-password-0123456789@127.0.0.1:5432/mlflow"
    base = {**leaked, "MLFLOW_TRACKING_URI": postgres}
    urls, specs = stack.plan(home, "/py", mlflow_port=5300, base_env=base, auth=auth)
    server, mlflow, worker = specs
    for spec in specs:  # nothing secret on any command line; no inherited credential
        assert not [a for a in spec.argv if any(s in a for s in secrets | {"db-password"})]
        assert spec.env.get("MLFLOW_TRACKING_PASSWORD") != "from-the-shell-0123456789"
    assert server.env["PREFECT_SERVER_API_AUTH_STRING"] == auth.values["PREFECT_AUTH_STRING"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in server.env
    assert mlflow.argv[mlflow.argv.index("--app-name") + 1] == "loraflow-auth"
    assert mlflow.env["MLFLOW_BACKEND_STORE_URI"] == postgres
    assert mlflow.env["MLFLOW_AUTH_CONFIG_PATH"] == str(home.mlflow_dir / "auth.ini")
    assert "PREFECT_SERVER_API_AUTH_STRING" not in mlflow.env
    # The worker talks to the authenticating MLflow server as loraflow-worker, not to the store.
    assert worker.env["MLFLOW_TRACKING_URI"] == urls.mlflow == "http://127.0.0.1:5300"
    assert worker.env["MLFLOW_TRACKING_USERNAME"] == "loraflow-worker"
    assert worker.env["MLFLOW_TRACKING_PASSWORD"] == auth.values["LORAFLOW_WORKER_PASSWORD"]
    assert worker.env["PREFECT_API_AUTH_STRING"] == auth.values["PREFECT_AUTH_STRING"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in worker.env
    assert "LORAFLOW_PROMOTER_PASSWORD" not in worker.env


def test_state_and_status_never_show_a_store_password(tmp_path):
    from tasks.core.ops.auth import redact_uri

    uri = "postgresql+psycopg2://loraflow:s3cret-pw@db:5432/mlflow"
    assert redact_uri(uri) == "postgresql+psycopg2://loraflow:***@db:5432/mlflow"
    assert redact_uri("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"
    state = stack.StackState("http://a", "http://b", redact_uri(uri), ("cpu",), secrets="/s.env")
    shown = "\n".join(stack.status_lines(state))
    assert "s3cret-pw" not in shown and "secrets /s.env" in shown
    embedded = "\n".join(stack.status_lines(stack.StackState("http://a", "http://b", "x", ())))
    assert "none: embedded mode, loopback only" in embedded


def test_up_refuses_a_public_address_without_secrets_and_weak_secrets(tmp_path):
    from tasks.core.security import envfile

    env = {"LORAFLOW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    public = subprocess.run(
        [str(BIN / "loraflow"), "up", "--host", "0.0.0.0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert public.returncode == 2 and "without --secrets" in public.stderr
    weak = envfile.generate() | {"POSTGRES_PASSWORD": "loraflow", "LORAFLOW_WORKER_PASSWORD": ""}
    path = envfile.write(tmp_path / "weak.env", weak, replace=False)
    refused = subprocess.run(
        [str(BIN / "loraflow"), "up", "--secrets", str(path)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "POSTGRES_PASSWORD is a default" in refused.stderr
    assert "LORAFLOW_WORKER_PASSWORD is missing or empty" in refused.stderr
