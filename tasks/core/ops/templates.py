"""Migrated, empty Prefect and MLflow databases, made at install and copied into a new home.

A new state home starts with no databases. Prefect's temporary server then runs its ~170
migrations before it answers (7 of its 14-15 s to ready on this 2-core machine), and MLflow
runs its own (2.6 s against 0.8 s to open a migrated copy), on the path of a first
``loraflow run``. Those migrations give the same empty schema in every home for one installed
version, so ``make`` builds it once (``python -m tasks.core.ops.templates``, ~25 s) into the
environment, and a new home gets a copy. A template is keyed by the package's version, so an
upgraded Prefect or MLflow migrates as before until templates are built again. A home whose
database exists, or whose MLflow or Prefect database lives elsewhere, is never touched.

Prefect's template also holds its block types: every server start registers them again
(~1.3 s of the temporary server's ~9 s to ready on a 2-core machine), and Prefect's own
memo of that is per database path, so never found in a new home. The template records what
it registered (``blocks_fingerprint``: Prefect's version and its installed collections) in a
file beside it; a home seeded from it gets that file beside its database, and its temporary
server skips the registration while the fingerprint still holds (``blocks_registered``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TEMPLATES_ENV = "LORAFLOW_DB_TEMPLATES"  # where templates are kept (default: in the venv)


def template_dir() -> Path:
    default = Path(sys.prefix) / "share" / "loraflow" / "db-templates"
    return Path(os.environ.get(TEMPLATES_ENV) or default)


def template_path(package: str) -> Path | None:
    """The template of ``package``'s (``prefect``, ``mlflow``) installed version."""
    try:
        return template_dir() / f"{package}-{version(package)}.db"
    except PackageNotFoundError:
        return None


BLOCKS_SUFFIX = ".blocks"  # beside a database: the ``blocks_fingerprint`` its blocks are of


def blocks_fingerprint() -> str:
    """What decides Prefect's block types: its version and the collections (plugins) that
    add their own, as installed now."""
    from importlib.metadata import entry_points

    collections = sorted(
        f"{ep.name}={ep.value}" for ep in entry_points(group="prefect.collections")
    )
    return f"prefect {version('prefect')}; collections: {', '.join(collections) or 'none'}"


def blocks_marker(database: Path) -> Path:
    return database.with_name(database.name + BLOCKS_SUFFIX)


def blocks_registered(prefect_db: Path | None) -> bool:
    """Whether this home's Prefect database holds the block types the installed Prefect would
    register at its server's start: seeded from a template that registered them, with the
    same fingerprint, and not emptied since. False when unsure: the server registers them."""
    if prefect_db is None:
        return False
    try:
        recorded = blocks_marker(prefect_db).read_text()
        with sqlite3.connect(f"file:{prefect_db}?mode=ro", uri=True) as db:
            types = db.execute("SELECT count(*) FROM block_type").fetchone()[0]
    except (OSError, sqlite3.Error):
        return False
    return types > 0 and recorded == blocks_fingerprint()


def seed_databases(
    prefect_db: Path | None, mlflow_db: Path | None, mlflow_artifacts: Path
) -> list[str]:
    """Copy the templates to a home's database paths (``Home.own_databases``: None where that
    database lives elsewhere) that do not exist yet; the packages seeded (none when no template
    was built for the installed versions). ``mlflow_artifacts``: the home's artifact root."""
    seeded = []
    if prefect_db is not None and _copy_new("prefect", prefect_db):
        _copy_blocks_marker(prefect_db)
        seeded.append("prefect")
    if mlflow_db is not None and _copy_new("mlflow", mlflow_db):
        _own_default_experiment(mlflow_db, mlflow_artifacts)
        seeded.append("mlflow")
    return seeded


def _copy_new(package: str, target: Path) -> bool:
    """Copy ``package``'s template to ``target`` unless ``target`` exists; never over a
    database another process created meanwhile (a hard link takes the name only if free).
    A copy that fails leaves no file: the package then migrates a new database, as always."""
    if target.exists():
        return False  # the usual case, decided before looking up any version
    template = template_path(package)
    if template is None or not template.is_file():
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError:
        return False
    os.close(handle)
    try:
        shutil.copyfile(template, partial)
        os.link(partial, target)
    except OSError:  # FileExistsError: another process was first
        return False
    finally:
        os.unlink(partial)
    return True


def _copy_blocks_marker(prefect_db: Path) -> None:
    """The template's record of its block types, beside the home's new copy (none: the
    template was built without them, and the server registers them as before)."""
    marker = blocks_marker(prefect_db)
    try:  # the template exists: the database was just copied from it
        shutil.copyfile(blocks_marker(template_path("prefect")), marker)
    except OSError:
        marker.unlink(missing_ok=True)


def _own_default_experiment(mlflow_db: Path, mlflow_artifacts: Path) -> None:
    """MLflow's 'Default' experiment points at the home's artifacts, created now (the
    template's migration recorded its own folder and time)."""
    now = int(time.time() * 1000)
    location = (mlflow_artifacts / "0").as_uri()
    with sqlite3.connect(mlflow_db) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
            "last_update_time = ? WHERE experiment_id = 0",
            (location, now, now),
        )


def build_templates(force: bool = False) -> list[Path]:
    """Migrate an empty Prefect and MLflow database into ``template_dir()`` (once per installed
    version); the templates made."""
    made = []
    for package, migrate in (("prefect", _migrate_prefect), ("mlflow", _migrate_mlflow)):
        target = template_path(package)
        if target is None or (target.is_file() and not force):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            database = Path(tmp) / "template.db"
            recorded = migrate(database)
            os.replace(database, target)
        if recorded:  # after the database: a record never describes another file
            blocks_marker(target).write_text(recorded)
        made.append(target)
    return made


# Prefect's server registers its block types at start with this same call (its lifespan's
# ``add_block_types``), each in a transaction of its own.
REGISTER_BLOCKS = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def main():
    session = await provide_database_interface().session()
    async with session:
        await run_block_auto_registration(session=session)

asyncio.run(main())
"""


def _migrate_prefect(database: Path) -> str:
    """Migrate, then register the block types; their fingerprint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(database.parent), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    for command in (
        ["-m", "prefect", "server", "database", "upgrade", "-y"],
        ["-c", REGISTER_BLOCKS],
    ):
        subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
    (database.parent / "prefect.db").rename(database)
    return blocks_fingerprint()


def _migrate_mlflow(database: Path) -> str:
    migrate = (
        "import sys; from mlflow.tracking import MlflowClient; "
        "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
    )  # in a child whose working directory is the template's: MLflow makes ./mlruns there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    subprocess.run(
        [sys.executable, "-c", migrate, f"sqlite:///{database}"],
        cwd=database.parent,
        env=env,
        check=True,
        capture_output=True,
    )
    return ""  # MLflow has nothing like Prefect's block types


if __name__ == "__main__":
    for path in build_templates(force="--force" in sys.argv):
        print(f"database template: {path}")
