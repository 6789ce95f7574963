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


def load_sql_store() -> None:
    """Import MLflow's SQL store and build its table mappings: ~1.4 s at a process's first
    client, taken ahead where a process waits anyway (``tasks/core/ops/preload.py``)."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def ensure_experiment(mlc: MlflowClient, name: str, artifact_root: Path) -> str:
    experiment = mlc.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (Path(artifact_root) / name).resolve().as_uri()
    return mlc.create_experiment(name, artifact_location=location)


def dataset_inputs(name: str, sources: dict[str, str], digests: dict[str, str]) -> list:
    """MLflow dataset inputs of a run, one per split (the run page's "Datasets"): name,
    digest (the split's sha256, cut to MLflow's 36-character column) and source (the file,
    or the Hub dataset ``hf://ORG/NAME?config=...&split=...``)."""
    import warnings
    from urllib.parse import parse_qs, urlparse

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import ColSpec, Schema

    schema = Schema([ColSpec("string", "text"), ColSpec("long", "label")])
    inputs = []
    for split, uri in sources.items():
        if uri.startswith("hf://"):
            parsed = urlparse(uri)
            query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            source = HuggingFaceDatasetSource(
                path=f"{parsed.netloc}{parsed.path}",
                config_name=query.get("config"),
                split=query.get("split"),
            )
        else:
            with warnings.catch_warnings():  # "resolving ... ambiguous": a local file is meant
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(uri)
        dataset = MetaDataset(source, name=f"{name}-{split}", digest=digests.get(split, "")[:32])
        dataset._schema = schema
        context = "training" if split == "train" else "eval"
        tag = InputTag(key="mlflow.data.context", value=context)
        inputs.append(DatasetInput(dataset=dataset._to_mlflow_entity(), tags=[tag]))
    return inputs
