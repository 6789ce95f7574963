"""The authenticated stack end to end: ``loraflow up --secrets`` on PostgreSQL, the pipeline
through the worker with the worker's credentials, a named promoter, the service with tokens.

One stack for the module (Prefect server with basic auth, MLflow ``loraflow-auth`` server, a
process worker, PostgreSQL for both stores), the tiny experiment deployed and run once, then
``alice`` (role loraflow-promoter) makes the version champion with ``loraflow promote`` and
``loraflow serve`` serves it with a feedback token. Refusals (401 / 403) must change nothing;
after it all, no secret may appear in MLflow, Prefect or any process's command line.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from tasks.core.home import Home
from tasks.core.ops import stack as plan
from tasks.core.ops.auth import SECRET_VARS
from tasks.core.security import envfile
from tests.flows.conftest import write_config
from tests.ops.conftest import BIN, new_home, run, stack_env

# Kept out of the default suite (its 10-minute budget): a whole authenticated stack on
# PostgreSQL takes about 2 minutes; `make test-slow` runs it.
pytestmark = pytest.mark.slow

ALICE, ALICE_PASSWORD = "alice", "alice-password-0123456789"
# The test cluster trusts loopback, so any password works; it is in the store's URI as a real
# deployment's would be, and must show up nowhere either (argv, stack.json, status output).
DB_PASSWORD = "db-password-0123456789"
MODEL = "tiny-lora"


@dataclass(frozen=True)
class AuthStack:
    home: Home
    env: dict[str, str]  # no credential in it
    values: dict[str, str]  # the secrets file
    urls: plan.StackUrls
    service: str
    flow_run_id: str
    output: str  # of loraflow up and loraflow promote

    def client_env(self, username: str, password: str) -> dict[str, str]:
        return {
            **self.env,
            "MLFLOW_TRACKING_URI": self.urls.mlflow,
            "MLFLOW_REGISTRY_URI": self.urls.mlflow,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": password,
            "PREFECT_API_URL": self.urls.prefect_api,
            "PREFECT_API_AUTH_STRING": self.values["PREFECT_AUTH_STRING"],
        }

    def mlflow(self, username: str, password: str, monkeypatch) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(self.urls.mlflow, registry_uri=self.urls.mlflow)

    @property
    def secrets(self) -> set[str]:
        return {v for v in self.values.values() if v} | {ALICE_PASSWORD, DB_PASSWORD}


def _databases(postgres, *names: str) -> None:
    with closing(psycopg2.connect(postgres.url("postgres"))) as connection:
        connection.autocommit = True
        for name in names:
            connection.cursor().execute(f"CREATE DATABASE {name}")


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory, postgres, mlflow_template_db, tiny_bert_dir):
    root = tmp_path_factory.mktemp("auth-stack")
    home = new_home(root / "home", mlflow_template_db, tiny_bert_dir)
    values = envfile.generate()
    secrets = envfile.write(root / "secrets.env", values, replace=False)
    _databases(postgres, "prefect_auth", "mlflow_auth")
    store = postgres.url("mlflow_auth", "postgresql+psycopg2").replace(
        f"{postgres.user}@", f"{postgres.user}:{DB_PASSWORD}@"
    )
    env = {
        k: v
        for k, v in stack_env(
            home,
            PREFECT_API_DATABASE_CONNECTION_URL=postgres.url("prefect_auth", "postgresql+asyncpg"),
            MLFLOW_TRACKING_URI=store,
            MLFLOW_REGISTRY_URI=store,
        ).items()
        if k not in SECRET_VARS
    }
    config = write_config(root)
    ports = [plan.free_port() for _ in range(3)]
    urls = plan.urls(plan.DEFAULT_HOST, ports[0], ports[1])
    loraflow = str(BIN / "loraflow")
    service = None
    try:
        up = run([loraflow, "up", "--detach", "--secrets", str(secrets), "--prefect-port",
                  str(ports[0]), "--mlflow-port", str(ports[1])], env, timeout=300)  # fmt: skip
        run([loraflow, "deploy", str(config)], env)  # the stack's auth string, found by itself
        worker_run = {**env, "PREFECT_API_URL": urls.prefect_api,
                      "PREFECT_API_AUTH_STRING": values["PREFECT_AUTH_STRING"]}  # fmt: skip
        started = run(
            [str(BIN / "prefect"), "deployment", "run", "finetune/tiny-test", "--watch",
             "--watch-timeout", "400"], worker_run, timeout=430,
        )  # fmt: skip
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
        run([loraflow, "access", "add-user", ALICE, "--role", "loraflow-promoter",
             "--tracking-uri", urls.mlflow, "--secrets", str(secrets)], env,
            stdin=ALICE_PASSWORD + "\n")  # fmt: skip
        stack = AuthStack(home, env, values, urls, f"http://127.0.0.1:{ports[2]}", flow_run_id, up)
        promoted = run([loraflow, "promote", MODEL], stack.client_env(ALICE, ALICE_PASSWORD))
        serve_env = {**stack.client_env("loraflow-serve", values["LORAFLOW_SERVE_PASSWORD"]),
                     "LORAFLOW_FEEDBACK_TOKEN": values["LORAFLOW_FEEDBACK_TOKEN"]}  # fmt: skip
        serve_env.pop("PREFECT_API_AUTH_STRING")
        log = (root / "serve.log").open("wb")
        service = subprocess.Popen(
            [loraflow, "serve", MODEL, "--port", str(ports[2])], env=serve_env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        from tasks.core.serving.runner import wait_ready

        wait_ready(stack.service, 180)
        yield AuthStack(home, env, values, urls, stack.service, flow_run_id, up + promoted)
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=60)
        subprocess.run([loraflow, "down"], env=env, timeout=120, check=False)


def test_unauthenticated_and_wrong_credentials_are_refused_everywhere(auth_stack):
    s = auth_stack
    flow_runs = f"{s.urls.prefect_api}/flow_runs/filter"
    user, password = s.values["PREFECT_AUTH_STRING"].split(":", 1)
    assert httpx.get(f"{s.urls.prefect_api}/health").status_code == 200  # probes stay open
    assert httpx.post(flow_runs, json={}).status_code == 401
    assert httpx.post(flow_runs, json={}, auth=(user, "wrong")).status_code == 401
    assert httpx.post(flow_runs, json={}, auth=(user, password)).status_code == 200
    search = f"{s.urls.mlflow}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(f"{s.urls.mlflow}/health").status_code == 200
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=("loraflow-worker", "wrong")).status_code == 401
    assert httpx.get(search, auth=(ALICE, s.values["LORAFLOW_WORKER_PASSWORD"])).status_code == 401
    assert httpx.get(search, auth=(ALICE, ALICE_PASSWORD)).status_code == 200
    feedback = httpx.post(f"{s.service}/feedback", json={"id": "x", "label": "positive"})
    assert feedback.status_code == 401


def test_the_pipeline_runs_end_to_end_with_the_worker_credentials(auth_stack, monkeypatch):
    from flows.cli.stack import prefect_client
    from tasks.core.registry.history import history

    s = auth_stack
    with prefect_client(s.urls.prefect_api, s.values["PREFECT_AUTH_STRING"]) as client:
        flow_run = client.read_flow_run(s.flow_run_id)
    assert flow_run.state.is_completed() and flow_run.work_pool_name == "cpu"
    reader = s.mlflow("loraflow-serve", s.values["LORAFLOW_SERVE_PASSWORD"], monkeypatch)
    version = reader.get_model_version(MODEL, "1")
    assert version.tags["registered_by"] == "loraflow-worker"
    records = history(reader, MODEL, "1")
    by = {(r.kind, r.outcome): (r.actor, r.user) for r in records}
    assert by[("registration", "registered")] == ("pipeline:loraflow-worker", "loraflow-worker")
    # The worker may not move champion: the pipeline recorded that it waits for a promoter,
    assert by[("promotion", "awaiting-promoter")][1] == "loraflow-worker"
    # and alice, a promoter, finished it with `loraflow promote`.
    assert by[("promotion", "promote")] == ("cli:alice", ALICE)
    assert reader.get_registered_model(MODEL).aliases == {"challenger": "1", "champion": "1"}


def test_a_reader_cannot_move_an_alias_and_the_registry_stays_as_it_was(auth_stack, monkeypatch):
    from mlflow.exceptions import MlflowException

    s = auth_stack
    reader = s.mlflow("loraflow-serve", s.values["LORAFLOW_SERVE_PASSWORD"], monkeypatch)
    before = reader.get_registered_model(MODEL)
    for call in (
        lambda: reader.set_registered_model_alias(MODEL, "champion", "1"),
        lambda: reader.delete_registered_model_alias(MODEL, "champion"),
        lambda: reader.set_registered_model_alias(MODEL, "challenger", "1"),
    ):
        with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
            call()
    worker = s.mlflow("loraflow-worker", s.values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    with pytest.raises(MlflowException, match="loraflow-promoter"):
        worker.delete_registered_model_alias(MODEL, "champion")
    after = reader.get_registered_model(MODEL)
    assert (after.aliases, after.tags) == (before.aliases, before.tags)


def test_feedback_without_the_token_is_401_and_does_not_count(auth_stack):
    from tests.serving.test_service import total

    s = auth_stack
    with httpx.Client(base_url=s.service, timeout=60) as http:
        pid = http.post("/predict", json={"text": "a fine film"}).json()["predictions"][0]["id"]
        item = {"id": pid, "label": "positive"}
        assert http.post("/feedback", json=item).status_code == 401
        assert (
            http.post("/feedback", json=item, headers={"Authorization": "Bearer x"}).status_code
            == 401
        )
        assert total(s.service, "loraflow_feedback_total") == 0
        token = {"Authorization": f"Bearer {s.values['LORAFLOW_FEEDBACK_TOKEN']}"}
        assert http.post("/feedback", json=item, headers=token).json()["accepted"] == 1
        assert total(s.service, "loraflow_feedback_total", version="1") == 1


def test_lineage_shows_who_decided(auth_stack):
    s = auth_stack
    shown = run(
        [str(BIN / "loraflow"), "lineage", f"{MODEL}@champion", "--no-config"],
        {**s.client_env("loraflow-serve", s.values["LORAFLOW_SERVE_PASSWORD"]), "COLUMNS": "250"},
    )
    assert "cli:alice" in shown and "pipeline:loraflow-worker" in shown
    assert "by loraflow-worker" in shown  # registered by


def _mlflow_texts(s: AuthStack, monkeypatch) -> list[str]:
    admin = s.mlflow("loraflow-admin", s.values["MLFLOW_AUTH_ADMIN_PASSWORD"], monkeypatch)
    texts = []
    experiments = [e.experiment_id for e in admin.search_experiments()]
    for run_ in admin.search_runs(experiments, max_results=5000):
        texts += [f"{k}={v}" for k, v in {**run_.data.params, **run_.data.tags}.items()]
    for model in admin.search_registered_models():
        texts += [model.description or "", str(model.tags)]
        for version in admin.search_model_versions(f"name = '{model.name}'"):
            texts += [version.description or "", str(version.tags), version.source or ""]
    for path in s.home.mlflow_artifacts.rglob("*"):  # every artifact of every run and model
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return texts


def _prefect_texts(s: AuthStack) -> list[str]:
    from prefect.client.schemas.filters import LogFilter

    from flows.cli.stack import prefect_client

    texts = []
    with prefect_client(s.urls.prefect_api, s.values["PREFECT_AUTH_STRING"]) as client:
        for flow_run in client.read_flow_runs(limit=200):
            texts += [str(flow_run.parameters), str(flow_run.job_variables)]
        for deployment in client.read_deployments():
            texts += [str(deployment.parameters), str(deployment.job_variables)]
        offset = 0
        while logs := client.read_logs(log_filter=LogFilter(), limit=200, offset=offset):
            texts += [log.message for log in logs]
            offset += len(logs)
        texts += [str(a.data) for a in client.read_artifacts(limit=200)]
    for log in (s.home.root / "logs").glob("*.log"):  # the servers' and the worker's own logs
        texts.append(log.read_text(errors="replace"))
    return texts


def test_no_secret_appears_in_mlflow_prefect_or_any_command_line(auth_stack, monkeypatch):
    s = auth_stack
    command_lines = []  # while the stack, its worker and the service run
    for proc in psutil.process_iter(["cmdline"]):
        command_lines.append(" ".join(proc.info["cmdline"] or ()))
    where = {
        "process listings": command_lines,
        "MLflow params/tags/artifacts": _mlflow_texts(s, monkeypatch),
        "Prefect parameters/logs/artifacts": _prefect_texts(s),
        "loraflow up and promote output": [s.output],
    }
    assert (
        len(where["MLflow params/tags/artifacts"]) > 50
        and len(where["Prefect parameters/logs/artifacts"]) > 20
    )
    leaks = [
        f"{place}: {secret[:4]}..."
        for place, texts in where.items()
        for secret in s.secrets
        if any(secret in text for text in texts)
    ]
    assert leaks == []
    state = (s.home.root / "stack.json").read_text()
    assert not any(secret in state for secret in s.secrets)


def test_secrets_file_is_private(auth_stack):
    path = Path(plan.read_state(auth_stack.home).secrets)
    assert path.stat().st_mode & 0o777 == 0o600
