"""What a training run is outside the process that trains it: its job, its MLflow record.

``TrainJob`` is everything a training process needs, as references (base repo@revision, the
prepared data's path, the MLflow run id, the training identity); it is the child process's
job file and the argument of ``fine_tune``. A retry finds its MLflow run again by the identity
tag (``find_run``), and a finished run describes its result (``result_from_run``), so the
pipeline can continue with training that ran in another attempt or on another worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.training.refs import ModelRef

ADAPTER_ARTIFACT = "adapter"
IDENTITY_TAG = "loraflow.train_identity"
RESUMED_TAG = "loraflow.resumed_from_step"


@dataclass(frozen=True)
class TrainJob:
    repo_id: str
    revision: str
    prepared_path: str
    labels: list[str]
    lora: dict
    train: dict
    tracking_uri: str
    run_id: str
    work_dir: str
    cache_dir: str | None
    identity: str

    @property
    def folder(self) -> Path:
        return job_dir(Path(self.work_dir), self.identity)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.repo_id, self.revision)

    @property
    def lora_spec(self) -> LoraSpec:
        return LoraSpec(**self.lora)

    @property
    def train_spec(self) -> TrainSpec:
        return TrainSpec(**self.train)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    adapter_artifact: str
    steps: int
    train_loss: float
    runtime_s: float
    trainable_parameters: int
    total_parameters: int
    resumed_from_step: int = 0
    peak_rss_mb: float = 0.0
    finished_at: float = 0.0  # epoch seconds: a result older than a pipeline run was cached


def job_dir(work_dir: Path, identity: str) -> Path:
    """Where a training identity keeps its checkpoints and launcher files."""
    return Path(work_dir) / "training" / identity


def training_params(ref: ModelRef, lora: LoraSpec, train: TrainSpec, fingerprint: str) -> dict:
    params = {
        "base_repo_id": ref.repo_id,
        "base_revision": ref.revision,
        "dataset_sha256": fingerprint,
    }
    params |= {f"lora.{k}": v for k, v in lora.model_dump(mode="json").items()}
    params |= {f"train.{k}": v for k, v in train.model_dump(mode="json").items()}
    return {k: str(v) for k, v in params.items()}


def find_run(mlc: MlflowClient, experiment_id: str, identity: str, flow_run_id: str = ""):
    """The MLflow run a (re)try of this training continues, or None for a fresh start.

    First a run of this flow run that already finished (the task failed after training, so the
    retry only reports it); then the newest unfinished run of this identity (resume it).
    """
    runs = mlc.search_runs(
        [experiment_id],
        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        tags = run.data.tags
        if (
            run.info.status == "FINISHED"
            and flow_run_id
            and tags.get("prefect.flow_run_id") == (flow_run_id)
        ):
            return run
    return next((run for run in runs if run.info.status != "FINISHED"), None)


def latest_finished_run(mlc: MlflowClient, experiment_id: str, identity: str):
    """The newest finished training of this identity (what a remote worker just trained)."""
    runs = mlc.search_runs(
        [experiment_id],
        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def result_from_run(run) -> TrainResult:
    """The TrainResult a finished run records (for a retry, or a run on another worker)."""
    metrics, params = run.data.metrics, run.data.params
    return TrainResult(
        run_id=run.info.run_id,
        adapter_artifact=ADAPTER_ARTIFACT,
        steps=int(metrics.get("train_steps", 0)),
        train_loss=float(metrics.get("train_final_loss", float("nan"))),
        runtime_s=float(metrics.get("train_runtime_s", 0.0)),
        trainable_parameters=int(params.get("trainable_parameters", 0)),
        total_parameters=int(params.get("total_parameters", 0)),
        resumed_from_step=int(run.data.tags.get(RESUMED_TAG, 0)),
        peak_rss_mb=float(metrics.get("train_peak_rss_mb", 0.0)),
        finished_at=(run.info.end_time or 0) / 1000,
    )
