"""Stage 4 - LoRA fine-tune: a new MLflow run holding params, per-step metrics and the adapter."""

from __future__ import annotations

from mlflow.entities import Param
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.common import key, stage_options
from tasks.core.config import LoraSpec, RegistrySpec, TrainSpec
from tasks.core.data import DataReport
from tasks.core.discovery import Candidate
from tasks.core.home import Home
from tasks.core.licenses import AuditRecord
from tasks.core.modeling import ModelRef
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training import TrainResult, fine_tune, training_params


def _cache_key(context, params) -> str:
    home: Home = params["home"]
    return key(
        "train",
        params["model"].ref,
        params["data"].fingerprint,
        params["lora"],
        params["train"],
        params["registry"].experiment,
        home.tracking_uri,
    )


@task(
    name="fine-tune",
    task_run_name="fine-tune {model.repo_id} on {data.fingerprint:.12}",
    timeout_seconds=6 * 3600,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def train_adapter(
    model: Candidate,
    data: DataReport,
    lora: LoraSpec,
    train: TrainSpec,
    registry: RegistrySpec,
    experiment_name: str,
    lineage: dict[str, str],
    audit: AuditRecord,
    home: Home,
) -> TrainResult:
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, registry.experiment, home.mlflow_artifacts)
    ref = ModelRef(model.repo_id, model.revision)
    tags = {
        "loraflow.experiment": experiment_name,
        "base_repo_id": ref.repo_id,
        "base_revision": ref.revision,
        "dataset_sha256": data.fingerprint,
        "license_verdict": audit.verdict,
        "validation_verdict": data.verdict,
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
        **{k: v for k, v in lineage.items() if k != "resolved_config"},
    }
    run = mlc.create_run(
        experiment_id, run_name=f"{experiment_name}-{data.fingerprint[:8]}", tags=tags
    )
    run_id = run.info.run_id
    try:
        params = training_params(ref, lora, train, data.fingerprint)
        mlc.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        mlc.log_text(run_id, lineage.get("resolved_config", ""), "config/resolved.yaml")
        mlc.log_dict(run_id, audit.to_dict(), "audit/license.json")
        mlc.log_dict(run_id, data.to_dict(), "data/validation.json")
        result = fine_tune(
            ref,
            data.prepared_path,
            list(data.label_names),
            lora,
            train,
            mlc,
            run_id,
            home.work_dir,
            home.hf_hub_cache,
        )
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")
        raise
    mlc.set_terminated(run_id, "FINISHED")
    create_markdown_artifact(
        key="training",
        markdown=(
            f"## Fine-tune {ref}\n\nMLflow run `{run_id}`: {result.steps} steps, final loss "
            f"{result.train_loss:.4f}, {result.runtime_s:.0f} s, {result.trainable_parameters:,} of "
            f"{result.total_parameters:,} parameters trained (LoRA r={lora.r})."
        ),
        description="Training summary",
    )
    return result
