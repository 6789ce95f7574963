"""MLflow plumbing: one client on the embedded store, experiments with artifacts beside it.

With a SQLite tracking URI MLflow would put artifacts in ``./mlruns`` of whatever directory a
process happens to run in; experiments are therefore created with an explicit artifact
location under the state home, so every worker finds the same files.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient


def client(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(mlc: MlflowClient, name: str, artifact_root: Path) -> str:
    experiment = mlc.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (Path(artifact_root) / name).resolve().as_uri()
    return mlc.create_experiment(name, artifact_location=location)
