"""Session-wide test environment: a throwaway state home, one Prefect server, one MLflow DB.

The environment is set before anything imports Prefect or huggingface_hub (both read their
settings at import). The ephemeral Prefect server and MLflow's SQLite migration each take
seconds, so both happen once per session; every test then gets its own copy of the migrated
MLflow database and its own Hugging Face cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SESSION_DIR = Path(tempfile.mkdtemp(prefix="loraflow-tests-"))
os.environ["LORAFLOW_HOME"] = str(SESSION_DIR / "home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_REGISTRY_URI", None)

from tasks.core.home import Home, apply_env  # noqa: E402

apply_env()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template_db() -> Path:
    from mlflow.tracking import MlflowClient

    path = SESSION_DIR / "template-mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # runs the migrations
    return path


@pytest.fixture
def home(tmp_path, monkeypatch, mlflow_template_db) -> Home:
    """A fresh state home: its own MLflow DB (a copy of the migrated template) and HF cache."""
    root = tmp_path / "home"
    home = Home(root).ensure()
    shutil.copyfile(mlflow_template_db, home.mlflow_db)
    monkeypatch.setenv("LORAFLOW_HOME", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home.mlflow_db}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{home.mlflow_db}")
    return Home(root)


@pytest.fixture(scope="session")
def tiny_bert_dir() -> Path:
    from tests.tiny import build_tiny_bert

    return build_tiny_bert(SESSION_DIR / "tiny-bert")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves os.environ as it found it. Commands run in-process set variables for the
    rest of their process, as they should (`use_running_server` sets PREFECT_API_URL); a test
    scheduled after one of them on the same worker must not inherit it."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


# -- Scheduling on xdist workers (`make test` runs `-n 2 --dist loadgroup`) -------------------
# Modules that share an expensive fixture run on one worker, so it is built once: a
# session-scoped fixture is built once per worker that runs a test using it, and the shared
# `loraflow up` stack alone takes ~60 s to start and run its first deployment. The groups are
# given to xdist's scheduler directly: its own `xdist_group` mark does nothing under pytest 9,
# which ignores the node id suffix xdist 3.8 writes (measured: the stack was built twice).
SHARED_FIXTURE_GROUPS = {
    "tests/ops/test_game_day.py": "stack",
    "tests/ops/test_scheduler.py": "stack",
    "tests/ops/test_stack.py": "stack",
    "tests/ops/test_browser.py": "stack",
    "tests/ops/test_postgres.py": "postgres",
    "tests/ops/test_auth_stack.py": "postgres",
    "tests/flows/test_gates_flow.py": "gates-flow",  # module fixture: trains several versions
    "tests/flows/test_canary_flow.py": "canary-flow",
    "tests/ops/test_registry_auth.py": "registry-auth",
    "tests/ops/test_db_templates.py": "db-templates",  # module fixture: builds both templates
    "tests/test_architecture.py": "architecture",  # module fixture: imports every module
}
# Then the longest single tests first (measured with --durations), so that no worker is left
# with a minute-long test while the other idles at the end.
LONG_FIRST = (
    "tests/ops/test_kill.py",
    "tests/flows/test_generative_canary.py",
    "tests/flows/test_training_resume.py",
    "tests/unit/test_training_processes.py",
    "tests/flows/test_finetune_flow.py",
    "tests/flows/test_decision_history.py",
    "tests/flows/test_generative_flow.py",
    "tests/cli/test_cli.py",
    "tests/cli/test_clear_output.py",
)


def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup``: xdist's group scheduler with the groups above."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SharedFixtureScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            if scope != nodeid:  # an xdist_group mark that did take effect
                return scope
            return SHARED_FIXTURE_GROUPS.get(nodeid.split("::")[0], nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The long tests first; each group's tests together, at its first test's place, so that
    a group's fixture can stop after its last test (``tests/ops/conftest.py``), with or
    without xdist."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        group = SHARED_FIXTURE_GROUPS.get(item.nodeid.split("::")[0])
        first.setdefault(group or item.nodeid, index)

    def rank(indexed):
        index, item = indexed
        module = item.nodeid.split("::")[0]
        place = first[SHARED_FIXTURE_GROUPS.get(module) or item.nodeid]
        return (LONG_FIRST.index(module) if module in LONG_FIRST else len(LONG_FIRST), place, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]
