"""The stack on PostgreSQL: Prefect's database and MLflow's backend store both there.

A throwaway PostgreSQL cluster (Debian's ``postgresql`` package, started by the fixture);
``loraflow up`` in the foreground with ``PREFECT_API_DATABASE_CONNECTION_URL`` and
``MLFLOW_TRACKING_URI`` on it; the pipeline run against that Prefect server with MLflow on
PostgreSQL; the records read back with plain SQL (so they live in PostgreSQL, not in a SQLite
file on the side) and through the MLflow server; then Ctrl-C, which must stop every process.
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import closing

import httpx
import psycopg2

from flows.cli.stack import alive, stop_all
from tasks.core.ops import stack
from tests.flows.conftest import write_config
from tests.ops.conftest import BIN, stack_env, wait_for


def test_stack_on_postgres_runs_the_pipeline_and_stops_on_ctrl_c(
    postgres, home, mirrored, tmp_path, monkeypatch
):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.finetune import finetune

    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which MLflow 3.17's logged-model
    # queries fail ("operator does not exist"); MLflow is tested on psycopg2.
    mlflow_url = postgres.url("mlflow", "postgresql+psycopg2")
    env = stack_env(
        home,
        PREFECT_API_DATABASE_CONNECTION_URL=postgres.url("prefect", "postgresql+asyncpg"),
        MLFLOW_TRACKING_URI=mlflow_url,
        MLFLOW_REGISTRY_URI=mlflow_url,
    )
    ports = [stack.free_port(), stack.free_port()]
    up = subprocess.Popen(
        [str(BIN / "loraflow"), "up", "--prefect-port", str(ports[0])]
        + ["--mlflow-port", str(ports[1])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As a background job of a non-interactive shell (a CI script) starts it: SIGINT
        # ignored. Ctrl-C below must stop the stack all the same.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    state = None
    try:

        def ready():
            assert up.poll() is None, f"loraflow up exited:\n{up.communicate()[0][-3000:]}"
            state = stack.read_state(home)
            return state if state and state.ready else None

        state = wait_for(ready, 300, "loraflow up on PostgreSQL")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_url)
        config = write_config(tmp_path)
        # Prefect keeps one events worker and one log worker per process, bound to the server
        # they first met (the session's test harness): stop them so that this run's task
        # states, which travel as events, reach the stack's server instead.
        EventsWorker.drain_all(timeout=10)
        APILogWorker.drain_all(timeout=10)
        with temporary_settings({PREFECT_API_URL: state.urls.prefect_api}):
            run = finetune(config_path=str(config), return_state=True)
            # Ship buffered logs and events now, while this server still runs.
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
        assert run.is_completed(), run.message
        flow_run_id = str(run.state_details.flow_run_id)

        def rows(database: str, sql: str, *args) -> list[tuple]:
            with closing(psycopg2.connect(postgres.url(database))) as connection:
                cursor = connection.cursor()
                cursor.execute(sql, args)
                return cursor.fetchall()

        [(state_type,)] = rows(
            "prefect", "SELECT state_type FROM flow_run WHERE id = %s", flow_run_id
        )
        assert state_type == "COMPLETED"
        [(tasks,)] = rows(
            "prefect",
            "SELECT count(*) FROM task_run WHERE flow_run_id = %s AND state_type = 'COMPLETED'",
            flow_run_id,
        )
        assert tasks >= 7
        [(artifacts,)] = rows(
            "prefect", "SELECT count(*) FROM artifact WHERE flow_run_id = %s", flow_run_id
        )
        assert artifacts >= 7
        aliases = dict(
            rows(
                "mlflow",
                "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                "tiny-lora",
            )
        )
        assert aliases.get("champion") == 1
        [(losses,)] = rows(
            "mlflow",
            "SELECT count(*) FROM metrics WHERE key = 'train_loss' AND run_uuid = %s",
            run.result()["run_id"],
        )
        assert losses >= 2
        # The stack's MLflow server serves what is in PostgreSQL.
        served = httpx.get(
            f"{state.mlflow_url}/api/2.0/mlflow/registered-models/get", params={"name": "tiny-lora"}
        ).json()["registered_model"]
        assert {a["alias"]: int(a["version"]) for a in served["aliases"]} == aliases

        up.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = up.communicate(timeout=120)
        assert up.returncode == 0, output
        assert "stopped: worker-cpu" in output and "prefect-server" in output
        assert not any(alive(p) for p in state.processes)
        assert stack.read_state(home) is None
    finally:
        EventsWorker.drain_all(timeout=10)  # later tests get workers bound to their server
        APILogWorker.drain_all(timeout=10)
        if up.poll() is None:
            up.kill()
            up.wait()
        if state is not None:
            stop_all(state.processes)
