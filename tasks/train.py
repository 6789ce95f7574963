"""Stage 4 - LoRA fine-tune into one MLflow run; a retry resumes that run from its checkpoint.

The task finds its MLflow run again by the training identity (its own cache key: base
repo@sha, dataset sha256, the ``lora`` section, the ``train`` section without runtime-only
fields, experiment and store), so a Prefect retry - or a re-run after the whole process died -
continues the same run from the newest checkpoint instead of starting over. Training itself
runs in a child process (``tasks.core.training.launcher``) unless ``train.launcher: in-process``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.entities import Param
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from tasks.common import log_decision, stage_options, training_wait
from tasks.core.audit.licenses import AuditRecord
from tasks.core.catalog.base import Candidate
from tasks.core.config.experiment import RegistrySpec
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.data.report import DataReport
from tasks.core.digests import key
from tasks.core.home import Home
from tasks.core.ops.links import ui_links
from tasks.core.ops.preload import in_background, settle
from tasks.core.tracking import client, dataset_inputs, ensure_experiment
from tasks.core.training.launcher import launch
from tasks.core.training.progress import StepEvent, TerminalProgress
from tasks.core.training.refs import ModelRef
from tasks.core.training.runs import (
    IDENTITY_TAG,
    TrainJob,
    TrainResult,
    find_run,
    result_from_run,
    training_params,
)

PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class TrainingInputs:
    """What the fine-tune stage trains and records: references and config sections only.

    One object, so the pipeline, the deployment on a work pool and the task pass the same
    thing (Prefect serialises it as the deployment's one parameter).
    """

    model: Candidate
    data: DataReport
    lora: LoraSpec
    train: TrainSpec
    registry: RegistrySpec
    experiment_name: str
    lineage: dict[str, str]
    audit: AuditRecord

    @property
    def base(self) -> ModelRef:
        return ModelRef(self.model.repo_id, self.model.revision)

    def identity(self, home: Home) -> str:
        """What is trained, where it is recorded: the cache key and the key a retry resumes by."""
        return key(
            "train",
            self.model.ref,
            self.data.fingerprint,
            self.lora,
            self.train.identity(),
            self.registry.experiment,
            home.tracking_uri,
        )

    def job(self, run_id: str, home: Home) -> TrainJob:
        """The training process's job: references, config sections as plain data."""
        return TrainJob(
            repo_id=self.model.repo_id,
            revision=self.model.revision,
            prepared_path=self.data.prepared_path,
            labels=list(self.data.label_names),
            lora=self.lora.model_dump(mode="json"),
            train=self.train.model_dump(mode="json"),
            tracking_uri=home.tracking_uri,
            run_id=run_id,
            work_dir=str(home.work_dir),
            cache_dir=str(home.hf_hub_cache),
            identity=self.identity(home),
        )


# What the stages after training import, loaded while the training processes compute and
# this process waits (``preload_evaluation``): PEFT and the scoring code (seconds), the serving
# form's export (onnx, ~0.5 s), the confusion matrix's plot (~0.4 s), and MLflow's map of
# installed packages, which the registration's model logging builds once (~0.6 s: it reads
# every installed distribution's file list).
EVALUATION_STEPS = (
    "tasks.core.evaluation.scoring",
    "onnx",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
    "mlflow.utils.requirements_utils:_init_packages_to_modules_map",
)


def preload_evaluation() -> None:
    """``EVALUATION_STEPS`` in a thread, while the training processes run."""
    in_background("preload-evaluation", *EVALUATION_STEPS)


def _cache_key(context, params) -> str:
    return params["inputs"].identity(params["home"])


class ProgressReporter:
    """Step events -> the Prefect progress artifact (throttled) and the terminal bar."""

    def __init__(self, title: str, logger):
        self.title, self.logger = title, logger
        self.bar = TerminalProgress(title)
        self.artifact = None
        self.last = 0.0

    def __call__(self, event: StepEvent) -> None:
        if event.kind == "resume":
            log_decision("fine-tune", f"resumed from step {event.step} (its checkpoint)")
            return
        self.bar(event)
        if event.kind == "checkpoint":
            self.logger.info("checkpoint saved at step %d", event.step)
            return
        now = time.monotonic()
        if event.kind != "step" or (
            now - self.last < PROGRESS_EVERY_S and event.step < event.total
        ):
            return
        self.last = now
        note = (
            f"{self.title}: step {event.step}/{event.total}, loss {event.train_loss:.4f}, "
            f"{event.samples_per_s:.0f} samples/s"
        )
        try:
            if self.artifact is None:
                self.artifact = create_progress_artifact(
                    event.percent, key="training-progress", description=note
                )
            else:
                update_progress_artifact(self.artifact, event.percent, description=note)
        except Exception as exc:  # the UI missing an update must not stop training
            self.logger.warning("progress artifact not updated: %s", exc)

    def close(self) -> None:
        self.bar.close()


def _record_inputs(mlc, run_id: str, inputs: TrainingInputs) -> None:
    """Params and input records of the run (idempotent: a resumed run logs the same again)."""
    data, audit = inputs.data, inputs.audit
    params = training_params(inputs.base, inputs.lora, inputs.train, data.fingerprint)
    mlc.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    mlc.log_text(run_id, inputs.lineage.get("resolved_config", ""), "config/resolved.yaml")
    mlc.log_dict(run_id, audit.to_dict(), "audit/license.json")
    mlc.log_dict(run_id, audit.discovery_table(), "discovery/candidates.json")
    mlc.log_dict(run_id, data.to_dict(), "data/validation.json")
    mlc.log_text(run_id, data.to_html(), "data/validation.html")
    if getattr(data, "sources", None):  # reports cached before they were recorded have none
        mlc.log_inputs(
            run_id, dataset_inputs(data.name or inputs.experiment_name, data.sources, data.digests)
        )


def _open_run(mlc, experiment_id: str, inputs: TrainingInputs, identity: str):
    """(run id, finished run or None): the run this attempt continues, or a new one."""
    flow_run_id = str(flow_run.get_id() or "")
    found = find_run(mlc, experiment_id, identity, flow_run_id)
    if found is not None and found.info.status == "FINISHED":
        return found.info.run_id, found
    if found is not None:
        mlc.update_run(found.info.run_id, status="RUNNING")
        mlc.set_tag(found.info.run_id, "prefect.flow_run_id", flow_run_id)  # who finishes it
        return found.info.run_id, None
    ref, data = inputs.base, inputs.data
    tags = {
        "loraflow.run_type": "training",
        "loraflow.experiment": inputs.experiment_name,
        IDENTITY_TAG: identity,
        "base_repo_id": ref.repo_id,
        "base_revision": ref.revision,
        "dataset_sha256": data.fingerprint,
        "license_verdict": inputs.audit.verdict,
        "validation_verdict": data.verdict,
        "prefect.flow_run_id": flow_run_id,
        **{k: v for k, v in inputs.lineage.items() if k != "resolved_config"},
    }
    name = f"{inputs.experiment_name}-{data.fingerprint[:8]}"
    return mlc.create_run(experiment_id, run_name=name, tags=tags).info.run_id, None


def _link_runs(mlc, run_id: str, experiment_id: str, home: Home) -> None:
    """The MLflow run names its Prefect flow run (a link where the UI is known), and the
    flow run's log names the MLflow run (with its page where MLflow's UI is known)."""
    links = ui_links(home)
    flow_run_id = str(flow_run.get_id() or "")
    page = links.flow_run(flow_run_id) if flow_run_id else None
    name = flow_run.get_name() or flow_run_id
    note = f"Prefect flow run [{name}]({page})" if page else f"Prefect flow run `{name}`"
    tags = {
        "prefect.flow_run_name": name or "",
        "mlflow.note.content": f"{note}, id `{flow_run_id}`",
    }
    if page:
        tags["prefect.flow_run_url"] = page
    for tag, value in tags.items():
        mlc.set_tag(run_id, tag, value)
    mlflow_page = links.mlflow_run(experiment_id, run_id)
    log_decision("fine-tune", f"MLflow run {run_id}" + (f" {mlflow_page}" if mlflow_page else ""))


@task(
    name="fine-tune",
    task_run_name="fine-tune {inputs.model.repo_id} on {inputs.data.fingerprint:.12}",
    timeout_seconds=6 * 3600,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def train_adapter(inputs: TrainingInputs, home: Home) -> TrainResult:
    logger = get_run_logger()
    mlc = client(home.tracking_uri)
    experiment_id = ensure_experiment(mlc, inputs.registry.experiment, home.mlflow_artifacts)
    identity = inputs.identity(home)
    run_id, finished = _open_run(mlc, experiment_id, inputs, identity)
    if finished is not None:  # its links name the flow run that trained it
        log_decision("fine-tune", f"already finished in MLflow run {run_id} (an earlier attempt)")
        return result_from_run(finished)
    _link_runs(mlc, run_id, experiment_id, home)
    ref = inputs.base
    reporter = ProgressReporter(f"fine-tune {ref.repo_id}", logger)
    try:
        _record_inputs(mlc, run_id, inputs)
        job = inputs.job(run_id, home)
        if inputs.train.launcher == "in-process":
            from tasks.core.training.run import fine_tune  # torch: only where it trains

            result = fine_tune(job, on_event=reporter, mlc=mlc)
        else:
            preload_evaluation()
            launched = training_wait(str(flow_run.get_id() or ""))
            result = launch(job, on_event=reporter, on_start=launched.now)
            settle()  # the next stages import what the preload imports: never both at once
    except BaseException:  # bad input (no retry, exit 2) or a failure a retry resumes
        mlc.set_terminated(run_id, "FAILED")
        raise
    finally:
        reporter.close()
    mlc.set_terminated(run_id, "FINISHED")
    lora = inputs.lora
    resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
    log_decision(
        "fine-tune",
        f"{result.steps} steps{resumed}, mean loss {result.train_loss:.4f}, "
        f"{result.runtime_s:.0f} s, {result.trainable_parameters:,} parameters trained",
    )
    create_markdown_artifact(
        key="training",
        markdown=(
            f"## Fine-tune {ref}\n\nMLflow run `{run_id}`: {result.steps} steps{resumed}, "
            f"mean loss {result.train_loss:.4f}, {result.runtime_s:.0f} s, peak memory "
            f"{result.peak_rss_mb:.0f} MB, {result.trainable_parameters:,} of "
            f"{result.total_parameters:,} parameters trained (LoRA r={lora.r}); loss curve "
            f"in `plots/loss_curve.png`."
        ),
        description="Training summary",
    )
    return result
