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
from tasks.core.ops.templates import (
    TEMPLATES_ENV,
    blocks_fingerprint,
    blocks_marker,
    blocks_registered,
    build_templates,
)
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
    prefect = folder / f"prefect-{version('prefect')}.db"
    assert blocks_marker(prefect).read_text() == blocks_fingerprint()
    assert block_counts(prefect)[0] > 0  # Prefect's block types, registered once, here
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


def block_counts(database: Path) -> tuple[int, int]:
    with sqlite3.connect(database) as db:
        return tuple(
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("block_type", "block_schema")
        )


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


def started(home: Home, register_blocks: bool) -> None:
    """A temporary server on the home's database, started, answering, then stopped."""
    from flows.cli.temp_server import TemporaryServer

    server = TemporaryServer(home.prefect_home / "server.log", register_blocks=register_blocks)
    try:
        server.start().wait()
    finally:
        server.stop()


def test_a_seeded_home_has_the_block_types_and_its_server_does_not_register_them(
    new_home, monkeypatch
):
    """The template registered Prefect's block types once; a home seeded from it starts its
    temporary server without registering them (~1.4 s of ~9 s to ready): the same block types
    and schemas as a server that registers them itself finds nothing to add."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = apply_env()
    database = home.prefect_home / "prefect.db"
    assert blocks_registered(database)
    before = block_counts(database)
    started(home, register_blocks=False)
    assert block_counts(database) == before
    log = (home.prefect_home / "server.log").read_text()
    started(home, register_blocks=True)  # Prefect's own registration: nothing was missing
    assert block_counts(database) == before, log


def test_the_block_types_are_registered_again_when_unsure(new_home, monkeypatch, tmp_path):
    """Another Prefect or another set of its collections, a database emptied of its block
    types, one not seeded (no record beside it), or none at all: the server registers them."""
    import tasks.core.ops.templates as templates

    home = apply_env()
    database = home.prefect_home / "prefect.db"
    assert blocks_registered(database)
    monkeypatch.setattr(templates, "blocks_fingerprint", lambda: "prefect 9.9.9; collections: x")
    assert not blocks_registered(database)
    monkeypatch.undo()
    copy = tmp_path / "copy.db"
    copy.write_bytes(database.read_bytes())
    assert not blocks_registered(copy)  # no record beside it
    blocks_marker(copy).write_text(blocks_fingerprint())
    assert blocks_registered(copy)
    with sqlite3.connect(copy) as db:
        db.execute("DELETE FROM block_schema")
        db.execute("DELETE FROM block_type")
    assert not blocks_registered(copy)
    assert not blocks_registered(tmp_path / "absent.db") and not blocks_registered(None)


def test_a_template_built_without_block_types_seeds_a_home_that_registers_them(
    new_home, templates, tmp_path, monkeypatch
):
    """Templates made before this record existed: the home gets no record, so its server
    registers the block types as before."""
    import shutil

    older = tmp_path / "older-templates"
    shutil.copytree(templates, older)
    for marker in older.glob("*.blocks"):
        marker.unlink()
    monkeypatch.setenv(TEMPLATES_ENV, str(older))
    home = apply_env()
    database = home.prefect_home / "prefect.db"
    assert database.is_file() and not blocks_marker(database).exists()
    assert not blocks_registered(database)
