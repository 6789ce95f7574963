"""Migrated database templates, built once, copied into each new state home.

Real parts: the templates are built by Prefect's and MLflow's own migrations, and the copies
are opened by a real MLflow client and served by a real temporary Prefect server.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tasks.core.home import Home, apply_env
from tasks.core.ops.templates import TEMPLATES_ENV, build_templates
from tasks.core.ops.templates import seed_databases as seed_paths


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("db-templates")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TEMPLATES_ENV, str(folder))
        made = build_templates()
        assert build_templates() == []  # once per installed version
    assert {p.name for p in made} == {
        f"prefect-{version('prefect')}.db",
        f"mlflow-{version('mlflow')}.db",
    }
    return folder


@pytest.fixture
def new_home(templates, tmp_path, monkeypatch) -> Home:
    monkeypatch.setenv(TEMPLATES_ENV, str(templates))
    monkeypatch.setenv("LORAFLOW_HOME", str(tmp_path / "home"))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    return Home.from_env()


def seed_databases(home: Home) -> list[str]:
    return seed_paths(*home.own_databases(), home.mlflow_artifacts)


def alembic_version(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_new_home_opens_its_mlflow_copy_without_migrating(new_home, templates):
    home = apply_env()
    assert home.mlflow_db.is_file() and (home.prefect_home / "prefect.db").is_file()
    head = alembic_version(templates / f"mlflow-{version('mlflow')}.db")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.tracking_uri)
    default = client.get_experiment("0")
    assert default.artifact_location == (home.mlflow_artifacts / "0").as_uri()
    client.create_run(client.create_experiment("templated"))
    assert alembic_version(home.mlflow_db) == head


def test_the_temporary_server_serves_flows_from_a_seeded_database(new_home):
    """The copy is at Prefect's head: the server migrates nothing and serves a flow run."""
    from tests.cli.test_startup import SERVED

    home = apply_env()
    database = home.prefect_home / "prefect.db"
    head = alembic_version(database)
    done = subprocess.run(
        [sys.executable, "-c", SERVED], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert alembic_version(database) == head


def test_an_existing_database_is_never_replaced(new_home):
    home = new_home.ensure()
    kept = b"a database this home already had"
    for path in (home.mlflow_db, home.prefect_home / "prefect.db"):
        path.write_bytes(kept)
    assert seed_databases(home) == []
    assert home.mlflow_db.read_bytes() == kept
    assert (home.prefect_home / "prefect.db").read_bytes() == kept
    assert not [p for p in home.mlflow_dir.iterdir() if p.name.startswith(".mlflow.db.")]


@pytest.mark.parametrize(
    ("env", "seeded"),
    [
        ({}, ["prefect", "mlflow"]),
        ({"MLFLOW_TRACKING_URI": "sqlite:////elsewhere/mlflow.db"}, ["prefect"]),
        ({"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"}, ["mlflow"]),
        ({TEMPLATES_ENV: "/no/templates/here"}, []),
    ],
)
def test_what_is_seeded(new_home, monkeypatch, env, seeded):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = Home.from_env().ensure()
    assert seed_databases(home) == seeded
    assert seed_databases(home) == []  # once


def test_a_failed_copy_leaves_nothing_and_the_package_migrates_as_before(new_home, monkeypatch):
    import tasks.core.ops.templates as templates

    def disk_full(source, target):
        Path(target).write_bytes(b"half a database")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(templates.shutil, "copyfile", disk_full)
    home = new_home.ensure()
    assert seed_databases(home) == []
    assert list(home.mlflow_dir.glob("*.db*")) == [] and list(home.mlflow_dir.glob(".*")) == []
    assert list(home.prefect_home.glob("*.db*")) == [] and list(home.prefect_home.glob(".*")) == []
