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


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_DIR, ignore_errors=True)
