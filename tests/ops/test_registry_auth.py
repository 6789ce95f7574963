"""The registry's roles against a real ``mlflow server --app-name loraflow-auth`` process.

MLflow's basic-auth app authenticates and applies per-role permissions; loraflow's rules on
top (``tasks/core/security/roles.py``) keep ``champion`` for promoters, creation for writers
and decision records truthful about their author. Every refusal must leave the registry as it
was. The CLI runs as a named person (``loraflow access add-user``, ``loraflow rollback``,
``loraflow lineage``) to show that a decision names who took it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.home import Home
from tasks.core.ops import stack as plan
from tasks.core.ops.auth import SECRET_VARS
from tasks.core.security import accounts, envfile
from tests.conftest import REPO
from tests.ops.conftest import wait_for

ALICE, ALICE_PASSWORD = "alice", "alice-password-0123456789"
BOB, BOB_PASSWORD = "bob", "bob-password-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_template_db):
    """(url, secrets, home): a loraflow-auth MLflow server on loopback, roles provisioned."""
    root = tmp_path_factory.mktemp("registry-auth")
    home = Home(root / "home").ensure()
    shutil.copyfile(mlflow_template_db, home.mlflow_db)
    values = envfile.generate()
    (home.mlflow_dir / "auth.ini").write_text(accounts.auth_ini(f"sqlite:///{root}/auth.db"))
    port = plan.free_port()
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(home.mlflow_dir / "auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=values["MLFLOW_AUTH_ADMIN_PASSWORD"],
        MLFLOW_FLASK_SERVER_SECRET_KEY=values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{home.mlflow_db}",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    log = (root / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "loraflow-auth"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--default-artifact-root", home.mlflow_artifacts.resolve().as_uri()],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up():
            assert proc.poll() is None, (root / "mlflow.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 120, "the loraflow-auth MLflow server", interval=0.5)
        accounts.provision(accounts.admin_client(url, values["MLFLOW_AUTH_ADMIN_PASSWORD"]), values)
        yield url, values, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def as_user(url: str, username: str, password: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(url, registry_uri=url)


def registered(mlc: MlflowClient, versions: int = 1) -> tuple[str, str, list[str]]:
    """(model, experiment id, versions) made by ``mlc`` (the worker)."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    experiment = mlc.create_experiment(name)
    mlc.create_registered_model(name)
    made = []
    for _ in range(versions):
        run = mlc.create_run(experiment, tags={"config_sha256": "c" * 64})
        version = mlc.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        mlc.set_terminated(run.info.run_id)
        made.append(str(version.version))
    mlc.set_registered_model_alias(name, "challenger", made[-1])
    return name, experiment, made


def refused(call) -> MlflowException:
    with pytest.raises(MlflowException) as caught:
        call()
    assert "403" in str(caught.value) or caught.value.error_code == "PERMISSION_DENIED"
    return caught.value


def test_unauthenticated_and_wrong_credentials_are_401(server):
    url, values, _ = server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(f"{url}/health").status_code == 200  # the probe stays open
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=("loraflow-worker", "wrong-password")).status_code == 401
    assert httpx.get(search, auth=("nobody", values["LORAFLOW_WORKER_PASSWORD"])).status_code == 401
    worker = ("loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"])
    assert httpx.get(search, auth=worker).status_code == 200


def test_a_reader_reads_and_cannot_move_an_alias_or_create(server, monkeypatch):
    url, values, _ = server
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    name, _, [v1] = registered(worker)
    reader = as_user(url, "loraflow-serve", values["LORAFLOW_SERVE_PASSWORD"], monkeypatch)
    before = reader.get_registered_model(name)
    assert before.aliases == {"challenger": v1}  # readers read
    for alias in ("champion", "challenger"):
        refused(lambda a=alias: reader.set_registered_model_alias(name, a, v1))
    refused(lambda: reader.delete_registered_model_alias(name, "challenger"))
    refused(lambda: reader.set_model_version_tag(name, v1, "promotion.action", "promote"))
    refused(lambda: reader.create_experiment(f"x-{uuid.uuid4().hex[:6]}"))
    refused(lambda: reader.create_registered_model(f"x-{uuid.uuid4().hex[:6]}"))
    after = reader.get_registered_model(name)
    assert after.aliases == before.aliases and after.tags == before.tags
    assert reader.get_model_version(name, v1).tags == {}


def test_workers_create_versions_but_only_promoters_move_champion(server, monkeypatch):
    url, values, _ = server
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    name, _, [v1, v2] = registered(worker, versions=2)
    why = refused(lambda: worker.set_registered_model_alias(name, "champion", v2))
    assert "loraflow-promoter" in why.message
    refused(lambda: worker.set_registered_model_alias(name, "previous-champion", v1))
    assert worker.get_registered_model(name).aliases == {"challenger": v2}  # unchanged

    promoter = as_user(url, "loraflow-promoter", values["LORAFLOW_PROMOTER_PASSWORD"], monkeypatch)
    promoter.set_registered_model_alias(name, "champion", v1)
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    refused(lambda: worker.delete_registered_model_alias(name, "champion"))
    refused(lambda: worker.delete_model_version(name, v1))  # deleting it would move champion
    refused(lambda: worker.delete_registered_model(name))
    assert worker.get_registered_model(name).aliases == {"challenger": v2, "champion": v1}


def test_decision_records_name_their_authenticated_author_and_never_change(server, monkeypatch):
    from tasks.core.registry.history import Decision, append, history

    url, values, _ = server
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    name, experiment, [v1] = registered(worker)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # identity: the authenticated user
    decision = Decision("evaluation", name, "pass", "test", "pipeline:loraflow-worker", v1)
    record = append(worker, experiment, decision)
    [found] = history(worker, name)
    assert (found.run_id, found.user) == (record, "loraflow-worker")
    forged = {"loraflow.run_type": "decision", "loraflow.decision.kind": "promotion"}
    refused(lambda: worker.create_run(experiment, tags={**forged, "loraflow.decision.user": ALICE}))
    refused(lambda: worker.create_run(experiment, tags=forged))  # an author must be named
    refused(lambda: worker.set_tag(record, "loraflow.decision.outcome", "promote"))
    refused(lambda: worker.delete_tag(record, "loraflow.decision.reason"))
    assert history(worker, name)[0].outcome == "pass"


def test_the_pipeline_waits_for_a_promoter_and_leaves_no_false_record(server, monkeypatch):
    from tasks.core.errors import PromotionForbidden
    from tasks.core.promotion.decision import decide_promotion
    from tasks.core.registry.history import history
    from tasks.promote import awaiting_promoter, record_promotion

    url, values, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    name, _, [v1] = registered(worker)
    decision = decide_promotion(v1, None)
    assert decision.action == "promote"
    with pytest.raises(PromotionForbidden, match="loraflow promote"):
        record_promotion(worker, name, decision, "pipeline:loraflow-worker")
    assert history(worker, name) == []  # the refused move left no FINISHED record
    waiting = awaiting_promoter(worker, name, decision, "needs a promoter")
    [record] = history(worker, name)
    assert (record.outcome, waiting.action) == ("awaiting-promoter", "awaiting-promoter")
    assert "champion" not in worker.get_registered_model(name).aliases


def loraflow(args: list[str], url: str, user: str, password: str, home: Home, stdin: str = ""):
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    env.update(
        LORAFLOW_HOME=str(home.root), MLFLOW_TRACKING_URI=url, MLFLOW_REGISTRY_URI=url,
        MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password, COLUMNS="250",
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *args], cwd=REPO, env=env, input=stdin,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_a_rollback_by_a_named_user_shows_that_user_in_lineage(server, monkeypatch, tmp_path):
    url, values, home = server
    secrets = envfile.write(tmp_path / "secrets.env", values, replace=False)
    for user, password, role in ((ALICE, ALICE_PASSWORD, "loraflow-promoter"),
                                 (BOB, BOB_PASSWORD, "loraflow-reader")):  # fmt: skip
        added = loraflow(
            ["access", "add-user", user, "--role", role, "--tracking-uri", url,
             "--secrets", str(secrets)],
            url, "", "", home, stdin=password + "\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert password not in added.stdout + added.stderr
    worker = as_user(url, "loraflow-worker", values["LORAFLOW_WORKER_PASSWORD"], monkeypatch)
    name, _, [v1, v2] = registered(worker, versions=2)
    promoter = as_user(url, "loraflow-promoter", values["LORAFLOW_PROMOTER_PASSWORD"], monkeypatch)
    promoter.set_registered_model_alias(name, "previous-champion", v1)  # as a canary leaves it
    promoter.set_registered_model_alias(name, "champion", v2)

    by_bob = loraflow(["rollback", name, "--reason", "not allowed"], url, BOB, BOB_PASSWORD, home)
    assert by_bob.returncode != 0 and "403" in by_bob.stderr + by_bob.stdout
    assert promoter.get_registered_model(name).aliases["champion"] == v2  # unchanged

    by_alice = loraflow(
        ["rollback", name, "--reason", "p95 latency"], url, ALICE, ALICE_PASSWORD, home
    )
    assert by_alice.returncode == 0, by_alice.stderr
    assert promoter.get_registered_model(name).aliases["champion"] == v1
    shown = loraflow(["lineage", f"{name}@{v2}", "--no-config"], url, BOB, BOB_PASSWORD, home)
    assert shown.returncode == 0, shown.stderr
    assert "cli:alice" in shown.stdout and "rolled back" in shown.stdout
