"""The embedded state home: one directory holds Prefect, MLflow and the Hugging Face cache.

Everything a run writes lives under ``LORAFLOW_HOME`` (default ``./.loraflow``), so deleting
that one folder resets the platform, and pointing the Prefect and MLflow UIs at it shows the
state of every past run. Environment variables are set *before* Prefect or huggingface_hub
are imported, because both read their settings at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The checkout (or the image's /app): configs/, flows/, tasks/. Shipped policies, the quickstart
# config and the training child's PYTHONPATH are found from here.
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = REPO_ROOT / "configs"
LICENSE_POLICY = SHIPPED_CONFIGS / "policies/licenses.yaml"
CANARY_POLICY = SHIPPED_CONFIGS / "policies/canary.yaml"
MONITORING_POLICY = SHIPPED_CONFIGS / "policies/monitoring.yaml"
SLO_POLICY = SHIPPED_CONFIGS / "policies/slo.yaml"
QUICKSTART_CONFIG = SHIPPED_CONFIGS / "experiments/sst2-minilm-lora.yaml"
GENERATIVE_CONFIG = SHIPPED_CONFIGS / "experiments/sst2-decoder-instruct-json.yaml"


@dataclass(frozen=True)
class Home:
    """Paths of the embedded state under one root directory."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(Path(os.environ.get("LORAFLOW_HOME", ".loraflow")).expanduser().resolve())

    @property
    def hf_home(self) -> Path:
        return self.root / "huggingface"

    @property
    def hf_hub_cache(self) -> Path:
        return self.hf_home / "hub"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def work_dir(self) -> Path:
        """Scratch space: prepared datasets, trainer checkpoints, downloaded artifacts."""
        return self.root / "work"

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    def env(self) -> dict[str, str]:
        """The variables that point Prefect, MLflow and huggingface_hub at this home."""
        return {
            "LORAFLOW_HOME": str(self.root),
            "HF_HOME": str(self.hf_home),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",  # offline: no usage reports (nor their thread)
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The temporary server takes seconds to start; on a busy 2-core machine over 20.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_home / "storage"),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_REGISTRY_URI": self.tracking_uri,
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        }

    def own_databases(self) -> tuple[Path | None, Path | None]:
        """(Prefect's, MLflow's) SQLite database in this home; None for one that lives
        elsewhere (a PostgreSQL Prefect, a remote or other MLflow tracking URI)."""
        prefect_elsewhere = bool(os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"))
        mlflow_elsewhere = self.tracking_uri != f"sqlite:///{self.mlflow_db}"
        return (
            None if prefect_elsewhere else self.prefect_home / "prefect.db",
            None if mlflow_elsewhere else self.mlflow_db,
        )

    def ensure(self) -> Home:
        for path in (self.hf_hub_cache, self.prefect_home, self.mlflow_artifacts, self.work_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self


# Switches a user may flip from outside (online Hub use, a remote MLflow server); the paths
# of the embedded state always follow LORAFLOW_HOME so one folder holds one platform.
_USER_OVERRIDABLE = {
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "TRANSFORMERS_VERBOSITY",
}


def apply_env(home: Home | None = None) -> Home:
    """Export the home's variables into this process (and so into its children); a new home
    gets migrated copies of the installed databases' templates (``ops/templates.py``)."""
    from tasks.core.ops.templates import seed_databases

    home = (home or Home.from_env()).ensure()
    for key, value in home.env().items():
        if key in _USER_OVERRIDABLE:
            os.environ.setdefault(key, value)
        else:
            os.environ[key] = value
    seed_databases(*home.own_databases(), home.mlflow_artifacts)
    return home
