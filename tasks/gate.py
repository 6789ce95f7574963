"""Stage 5 - evaluate + gate: score candidate, champion and base on one split; decide.

The champion (``models:/NAME@champion``) is loaded exactly as it is served and scored on this
run's eval split in this run, so non-inferiority compares like with like. Whatever the
outcome, the run keeps every figure, the report and the decision (JSON + tags); a failing
gate then raises GateFailed (no retry, CLI exit 3) and nothing is registered.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlflow
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.common import stage_options
from tasks.core.config.evaluation import EvalSpec, GateSpec
from tasks.core.config.experiment import RegistrySpec
from tasks.core.data.report import DataReport
from tasks.core.digests import file_sha256, key
from tasks.core.errors import GateFailed
from tasks.core.evaluation.base_cache import CachedBase
from tasks.core.evaluation.gates import GateDecision, decide_gates, to_markdown
from tasks.core.evaluation.report import EvalReport
from tasks.core.evaluation.scoring import (
    BASE_SEED,
    Classifier,
    adapter_classifier,
    base_classifier,
    confusion_png,
    evaluate_models,
)
from tasks.core.home import Home
from tasks.core.registry.lineage import MODEL_NAME_TAG
from tasks.core.registry.versions import CHAMPION, load_alias
from tasks.core.tracking import client
from tasks.core.training.modeling import read_base_ref
from tasks.core.training.runs import TrainResult


@dataclass(frozen=True)
class EvalOutcome:
    run_id: str
    metrics: dict[str, float]
    decision: GateDecision
    report: EvalReport | None = None
    compute_s: float = 0.0  # loading and scoring the models (the CLI's overhead figure)
    finished_at: float = 0.0  # epoch seconds: older than a pipeline run means cached


def fetch_adapter(home: Home, run_id: str, artifact: str) -> Path:
    """The run's adapter, downloaded once per run from the MLflow artifact store."""
    target = home.work_dir / "adapters" / run_id
    if not (target / artifact).is_dir():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact,
            dst_path=str(target),
            tracking_uri=home.tracking_uri,
        )
    return target / artifact


def _cache_key(context, params) -> str:
    home: Home = params["home"]
    gates: GateSpec = params["gates"]
    # The decision depends on who is champion now (unless it is this run's own model, which
    # is not compared with itself) and on the golden file's content.
    champion = champion_ref(
        client(home.tracking_uri), params["registry"].model_name, params["trained"].run_id
    )
    golden = file_sha256(gates.golden.path) if gates.golden.path else None
    return key(
        "evaluate",
        params["trained"].run_id,
        params["data"].fingerprint,
        params["spec"],
        gates,
        golden,
        champion,
        params["registry"].model_name,
        params["policy_version"],
        params["max_length"],
        home.tracking_uri,
    )


def champion_ref(mlc, name: str, run_id: str) -> str | None:
    """The champion version to compare with: none when there is none or it is this run's."""
    try:
        version = mlc.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return None if version.run_id == run_id else str(version.version)


def _champion(mlc, name: str, run_id: str):
    """(classifier, version) of the current champion, loaded as it is served; or (None, None)."""
    if champion_ref(mlc, name, run_id) is None:
        return None, None
    found = load_alias(mlc, name, CHAMPION)
    if found is None:  # the alias moved away in between
        return None, None
    version, model = found
    classifier = Classifier(
        model.model, model.tokenizer, list(model.labels), f"models:/{name}/{version.version}"
    )
    return classifier, str(version.version)


def record(mlc, run_id: str, model_name: str, report: EvalReport, decision: GateDecision) -> None:
    """Figures, report, decision and confusion matrix into the run (also when a gate fails)."""
    stamp = int(time.time() * 1000)
    figures = [Metric(f"eval_{k}", v, stamp, 0) for k, v in report.candidate.metrics.items()]
    for other, prefix in ((report.champion, "champion_eval_"), (report.base, "base_eval_")):
        if other is not None:
            figures += [Metric(prefix + k, v, stamp, 0) for k, v in other.metrics.items()]
    figures += [Metric(f"slice_{s.key}", s.figure, stamp, 0) for s in report.slices]
    tags = [
        RunTag("gate_decision", decision.label),
        RunTag(MODEL_NAME_TAG, model_name),
        RunTag("gate_failures", "; ".join(decision.failures())[:5000]),
        RunTag("champion_compared", report.champion_version or "none"),
    ] + [RunTag(f"gate.{g.gate}", g.status) for g in decision.gates]
    for start in range(0, len(figures), 1000):
        mlc.log_batch(run_id, metrics=figures[start : start + 1000])
    mlc.log_batch(run_id, tags=tags)
    mlc.log_dict(run_id, report.to_dict(), "eval/report.json")
    mlc.log_dict(run_id, decision.to_dict(), "gates/decision.json")
    with tempfile.TemporaryDirectory() as tmp:
        png = confusion_png(report, Path(tmp) / "confusion_matrix.png")
        if png is not None:
            mlc.log_artifact(run_id, str(png), "eval")


@task(
    name="evaluate-gate",
    task_run_name="evaluate {trained.run_id:.8}",
    timeout_seconds=3600,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def evaluate_and_gate(
    trained: TrainResult,
    data: DataReport,
    spec: EvalSpec,
    gates: GateSpec,
    registry: RegistrySpec,
    max_length: int,
    home: Home,
    policy_version: str = "",
) -> EvalOutcome:
    """Raise GateFailed (no retry) when a gate fails; the run keeps the figures and the decision."""
    mlc = client(home.tracking_uri)
    adapter = fetch_adapter(home, trained.run_id, trained.adapter_artifact)
    started = time.perf_counter()
    precision = eval_precision(spec)
    candidate = adapter_classifier(adapter, trained.run_id, home.hf_hub_cache, precision.dtype)
    champion, champion_version = _champion(mlc, registry.model_name, trained.run_id)
    base = cached_base(adapter, home, precision) if gates.base_model.score else None
    progress = ProgressLog(get_run_logger())
    for model in (candidate, champion):
        if model is not None:
            model.dtype, model.on_progress = precision.dtype, progress
    if base is not None:
        base.on_progress = progress
    report = evaluate_models(
        candidate,
        data.prepared_path,
        spec,
        gates,
        max_length,
        champion=champion,
        champion_version=champion_version,
        base=base,
    )
    compute_s = time.perf_counter() - started
    decision = decide_gates(report, gates, policy_version)
    record(mlc, trained.run_id, registry.model_name, report, decision)
    # Tags, not params: a re-evaluation of the run (a changed gate) may differ in both.
    cached = str(bool(base is not None and base.hit))
    mlc.log_batch(
        trained.run_id,
        tags=[RunTag(k, v) for k, v in precision.params("eval").items()]
        + [RunTag("eval.base_scores_cached", cached)],
    )
    create_markdown_artifact(
        key="gate-decision",
        markdown=to_markdown(decision, report),
        description=f"Gates for run {trained.run_id}",
    )
    if not decision.passed:
        raise GateFailed(f"gate failed, nothing registered: {'; '.join(decision.failures())}")
    return EvalOutcome(
        trained.run_id, report.candidate.metrics, decision, report, compute_s, time.time()
    )


def eval_precision(spec: EvalSpec):
    """The evaluation batches' precision on this machine (bf16 autocast where it is native)."""
    from tasks.core.training.precision import resolve

    return resolve(spec.precision)


def cached_base(adapter: Path, home: Home, precision) -> CachedBase:
    """The base model's scorer, reading and filling the cache under the state home."""
    ref, labels = read_base_ref(adapter)
    return CachedBase(
        load=partial(base_classifier, adapter, home.hf_hub_cache, precision.dtype),
        root=home.work_dir / "eval-cache" / "base",
        repo_id=ref.repo_id,
        revision=ref.revision,
        labels=labels,
        seed=BASE_SEED,
        precision=precision.mode,
        source=str(ref),
    )


class ProgressLog:
    """Logs each model's scoring progress at about every quarter (the stage's progress)."""

    def __init__(self, logger):
        self.logger, self.shown = logger, {}

    def __call__(self, source: str, done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter > self.shown.get(source, 0):
            self.shown[source] = quarter
            self.logger.info("scoring %s: %d/%d examples", source, done, total)
