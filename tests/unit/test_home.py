"""The embedded state home: every path under one root, and the environment that points at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.core.home import Home, apply_env

# Every variable apply_env may write; each test clears them through monkeypatch, which restores
# the original environment afterwards.
ENV_KEYS = tuple(Home(Path("/x")).env())


@pytest.fixture
def clean_env(monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_paths_derive_from_root(tmp_path):
    home = Home(tmp_path / "state")
    root = tmp_path / "state"
    assert home.hf_home == root / "huggingface"
    assert home.hf_hub_cache == root / "huggingface" / "hub"
    assert home.prefect_home == root / "prefect"
    assert home.mlflow_dir == root / "mlflow"
    assert home.mlflow_db == root / "mlflow" / "mlflow.db"
    assert home.mlflow_artifacts == root / "mlflow" / "artifacts"
    assert home.work_dir == root / "work"


def test_from_env_defaults_to_dot_loraflow_in_cwd(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    assert Home.from_env().root == tmp_path / ".loraflow"
    clean_env.setenv("LORAFLOW_HOME", str(tmp_path / "custom"))
    assert Home.from_env().root == tmp_path / "custom"
    clean_env.setenv("LORAFLOW_HOME", "relative/home")
    assert Home.from_env().root == tmp_path / "relative" / "home"


def test_tracking_uri_defaults_to_sqlite_under_root(clean_env, tmp_path):
    home = Home(tmp_path)
    assert home.tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert home.tracking_uri == "http://mlflow.example:5000"


def test_apply_env_points_everything_under_the_root(clean_env, tmp_path):
    clean_env.setenv("HF_HOME", "/somewhere/else")  # not overridable: follows the home
    clean_env.setenv("PREFECT_HOME", "/somewhere/else")
    home = apply_env(Home(tmp_path / "state"))
    root = tmp_path / "state"
    assert os.environ["LORAFLOW_HOME"] == str(root)
    assert os.environ["HF_HOME"] == str(root / "huggingface")
    assert os.environ["PREFECT_HOME"] == str(root / "prefect")
    assert os.environ["PREFECT_LOCAL_STORAGE_PATH"] == str(root / "prefect" / "storage")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{root}/mlflow/mlflow.db"
    assert os.environ["MLFLOW_REGISTRY_URI"] == os.environ["MLFLOW_TRACKING_URI"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for path in (home.hf_hub_cache, home.prefect_home, home.mlflow_artifacts, home.work_dir):
        assert path.is_dir()


def test_apply_env_keeps_user_set_switches(clean_env, tmp_path):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    clean_env.setenv("HF_HUB_OFFLINE", "0")
    apply_env(Home(tmp_path))
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert os.environ["MLFLOW_REGISTRY_URI"] == "http://mlflow.example:5000"
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["HF_HOME"] == str(tmp_path / "huggingface")
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "prefect")


def test_apply_env_without_argument_uses_loraflow_home(clean_env, tmp_path):
    clean_env.setenv("LORAFLOW_HOME", str(tmp_path / "from-env"))
    home = apply_env()
    assert home.root == tmp_path / "from-env"
    assert os.environ["HF_HOME"] == str(tmp_path / "from-env" / "huggingface")
