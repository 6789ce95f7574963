"""Stage 5 - evaluate + gate: score candidate, champion and base on one split; decide.

The champion (``models:/NAME@champion``) is loaded exactly as it is served and scored on this
run's eval split in this run, so non-inferiority compares like with like. Whatever the
outcome, the evaluation is a new record of the decision history (a run nested under the
training run: every figure, the report, the decision, the config sha); the training run
itself is not written to, so a re-evaluation never changes what a registered version points
at. A failing gate then raises GateFailed (no retry, CLI exit 3) and nothing is registered.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from logging import INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from tasks.common import log_decision, stage_options
from tasks.core.config.evaluation import EvalSpec, GateSpec
from tasks.core.config.experiment import RegistrySpec
from tasks.core.data.preprocess import Preprocessing
from tasks.core.data.report import DataReport
from tasks.core.digests import file_sha256, key
from tasks.core.errors import GateFailed
from tasks.core.evaluation.base_cache import BASE_SEED, CachedBase
from tasks.core.evaluation.gates import GateDecision, decide_gates, gate_lines, to_markdown
from tasks.core.evaluation.progress import ScoringProgress
from tasks.core.evaluation.report import EvalReport
from tasks.core.evaluation.run_cache import CachedRun, keeper
from tasks.core.home import Home
from tasks.core.monitoring.profile import ARTIFACT as PROFILE_ARTIFACT
from tasks.core.monitoring.profile import ReferenceProfile, profile_from_scores, profile_split
from tasks.core.registry.history import Decision, actor_pipeline, append
from tasks.core.registry.versions import CHAMPION, load_alias
from tasks.core.tracking import client
from tasks.core.training.refs import CAUSAL_LM, read_base_ref, read_task
from tasks.core.training.runs import ADAPTER_ARTIFACT, TrainResult

if TYPE_CHECKING:  # scoring imports torch: where a model is scored, not when this loads
    from tasks.core.evaluation.scoring import Classifier


@dataclass(frozen=True)
class EvalOutcome:
    run_id: str  # the training run evaluated
    metrics: dict[str, float]
    decision: GateDecision
    report: EvalReport | None = None
    record_run_id: str = ""  # the evaluation's record in the decision history
    # The preprocessing every evaluated text went through; registered with the model.
    preprocessing: dict | None = None
    compute_s: float = 0.0  # loading and scoring the models (the CLI's overhead figure)
    finished_at: float = 0.0  # epoch seconds: older than a pipeline run means cached
    # causal-lm: the decoding settings the answers were gated with; pinned with the model.
    generation: dict | None = None


def fetch_adapter(home: Home, run_id: str, artifact: str) -> Path:
    """The run's adapter, downloaded once per run from the MLflow artifact store."""
    target = home.work_dir / "adapters" / run_id
    if not (target / artifact).is_dir():  # downloaded beside it, then renamed: whole or absent
        target.parent.mkdir(parents=True, exist_ok=True)  # (two stages may fetch it at once)
        with tempfile.TemporaryDirectory(prefix=f".{run_id}-", dir=target.parent) as tmp:
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=tmp,
                tracking_uri=home.tracking_uri,
            )
            target.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # another fetch renamed its copy first
                os.rename(Path(tmp) / artifact, target / artifact)
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
        getattr(params["data"], "preprocessing", None) or None,
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


def _champion(mlc, name: str, run_id: str, home: Home, precision):
    """(scorer, version) of the current champion, as it is served: its scores from its own
    evaluation when they are kept (``run_cache``), else loaded and scored; or (None, None)."""
    if champion_ref(mlc, name, run_id) is None:
        return None, None
    try:
        version = mlc.get_model_version_by_alias(name, CHAMPION)
        labels = read_base_ref(fetch_adapter(home, version.run_id, ADAPTER_ARTIFACT))[1]
    except Exception:  # moved away in between, or a version without its run's adapter
        return _loaded_champion(mlc, name, precision)
    source = f"models:/{name}/{version.version}"
    scorer = CachedRun(
        load=partial(_served_classifier, name, str(version.version)),
        root=home.work_dir / "eval-cache" / "runs",
        run_id=version.run_id,
        labels=list(labels),
        precision=precision.mode,
        source=source,
        dtype=precision.dtype,
    )
    return scorer, str(version.version)


def _served_classifier(name: str, version: str) -> Classifier:
    """Version ``version`` of ``name`` loaded exactly as it is served (its pyfunc)."""
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    return _as_champion(model, name, version)


def _as_champion(model, name: str, version: str, dtype=None) -> Classifier:
    """A served pyfunc's model as the champion ``Classifier``, with its own preprocessing
    (None: registered before preprocessing travelled with the model)."""
    from tasks.core.evaluation.scoring import Classifier

    return Classifier(
        model.model, model.tokenizer, list(model.labels), f"models:/{name}/{version}",
        getattr(model, "preprocess", None), role="champion", dtype=dtype,
    )  # fmt: skip


def _loaded_champion(mlc, name: str, precision):
    found = load_alias(mlc, name, CHAMPION)
    if found is None:  # the alias moved away in between
        return None, None
    version, model = found
    return _as_champion(model, name, str(version.version), precision.dtype), str(version.version)


def _champion_generator(mlc, name: str, run_id: str):
    """(generator, version) of the current champion, loaded as it is served; or (None, None)."""
    from tasks.core.training.generation import Generator

    if champion_ref(mlc, name, run_id) is None:
        return None, None
    found = load_alias(mlc, name, CHAMPION)
    if found is None or not hasattr(found[1], "generation"):  # moved away, or a classifier
        return None, None
    version, model = found
    source = f"models:/{name}/{version.version}"
    return Generator(model.model, model.tokenizer, source, "champion"), str(version.version)


def score_generative(
    trained, data, spec, gates, registry, max_length, home, mlc, adapter, preprocessing=None
):
    """The causal-LM evaluation: candidate, champion and base generators on the eval split."""
    from functools import partial

    from tasks.core.data.chat import served_turns
    from tasks.core.evaluation.generation import evaluate_generators
    from tasks.core.training.generation import load_base_generator, load_generator

    candidate = load_generator(adapter, trained.run_id, home.hf_hub_cache)
    champion, champion_version = _champion_generator(mlc, registry.model_name, trained.run_id)
    base = load_base_generator(adapter, home.hf_hub_cache) if gates.base_model.score else None
    served = partial(
        served_turns,
        system=getattr(data, "system_prompt", "") or None,
        preprocess=preprocessing.apply if preprocessing is not None else None,
    )  # golden prompts reach the models as served prompts do
    return evaluate_generators(
        candidate, data.prepared_path, spec, gates, max_length, champion, champion_version, base,
        served,
    )  # fmt: skip


def figures(report: EvalReport) -> dict[str, float]:
    """Every figure of an evaluation, named as metrics: candidate, champion, base, slices."""
    out = {f"eval_{k}": v for k, v in report.candidate.metrics.items()}
    for other, prefix in ((report.champion, "champion_eval_"), (report.base, "base_eval_")):
        if other is not None:
            out |= {prefix + k: v for k, v in other.metrics.items()}
    return out | {f"slice_{s.key}": s.figure for s in report.slices}


def record(
    mlc, trained_run_id: str, model_name: str, report: EvalReport, decision: GateDecision,
    config: dict[str, str], record_key: str, run_facts: dict[str, str] | None = None,
    profile: ReferenceProfile | None = None,
) -> str:  # fmt: skip
    """The evaluation as its own decision record (also when a gate fails); its run id.

    ``config``: the sha256 and resolved YAML of the config that asked for this evaluation, so
    a refusal names the config that refused (the training run holds the one that trained).
    ``run_facts``: how it was computed (precision and its reason, base scores cached), as tags
    and details of the record.
    """
    run_facts = run_facts or {}
    failures = decision.failures()
    outcome = Decision(
        kind="evaluation",
        model=model_name,
        outcome=decision.label,
        reason="; ".join(failures) if failures else "every gate passed",
        actor=actor_pipeline(),
        train_run_id=trained_run_id,
        config_sha256=config.get("config_sha256", ""),
        figures=figures(report),
        details={"gate_policy_version": decision.policy_version} | run_facts,
        key=record_key,
    )
    extra = (
        {
            "gate_decision": decision.label,
            "gate_failures": "; ".join(failures),
            "champion_compared": report.champion_version or "none",
        }
        | {f"gate.{g.gate}": g.status for g in decision.gates}
        | run_facts
    )
    experiment_id = mlc.get_run(trained_run_id).info.experiment_id
    from tasks.core.evaluation.scoring import confusion_png

    with tempfile.TemporaryDirectory() as tmp:
        png = confusion_png(report, Path(tmp) / "confusion_matrix.png")
        return append(
            mlc,
            experiment_id,
            outcome,
            artifacts={
                "eval/report.json": report.to_dict(),
                "gates/decision.json": decision.to_dict(),
                **({"eval/worst_answers.json": list(report.examples)} if report.examples else {}),
                "config/resolved.yaml": config.get("resolved_config", ""),
            }
            | ({PROFILE_ARTIFACT: profile.to_dict()} if profile is not None else {}),
            files={"eval": png} if png is not None else None,
            extra_tags=extra,
        )


def reference_profile(
    candidate: Classifier, prepared_path: str, spec: EvalSpec, max_length: int, report: EvalReport
) -> ReferenceProfile:
    """What the candidate saw, for the monitor: its eval split as it scored it (preprocessed,
    the evaluation's own pass with its states), against its training split's vocabulary;
    stored in the evaluation record."""
    from tasks.core.data.prepare import load_prepared

    splits = load_prepared(prepared_path)
    texts = {name: list(splits[name]["text"]) for name in ("train", "eval") if name in splits}
    accuracy = report.candidate.metrics.get("accuracy")
    train, eval_texts = texts.get("train", []), texts.get("eval", [])
    if candidate.preprocess is not None:
        train = candidate.preprocess(train)
    kept = candidate.scored(eval_texts)  # preprocesses as predict did
    if kept is not None:
        return profile_from_scores(
            candidate.labels, kept.texts, kept.probs, kept.pooled, kept.tokens, train, accuracy
        )
    if candidate.preprocess is not None:
        eval_texts = candidate.preprocess(eval_texts)
    return profile_split(
        candidate.model, candidate.tokenizer, candidate.labels, eval_texts, train, max_length,
        spec.batch_size, accuracy,
    )  # fmt: skip


def log_scores(report: EvalReport, decision: GateDecision) -> None:
    """Each model's headline figures, then the gate decision with every gate's row."""
    for scores in (report.candidate, report.champion, report.base):
        if scores is not None:
            figures = ", ".join(
                f"{k} {scores.metrics[k]:.4f}"
                for k in ("accuracy", "macro_f1", "exact_match", "rouge_l", "format_valid")
                if k in scores.metrics
            )
            count = int(scores.metrics.get("examples", 0))
            log_decision(
                "evaluate",
                f"{scores.role} {scores.source[:40]}: {figures} on {count} "
                + ("prompts" if report.generative else "texts"),
            )
    counts = {s: sum(g.status == s for g in decision.gates) for s in ("pass", "fail", "skip")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    level = INFO if decision.passed else WARNING
    table = "".join(f"\n{line}" for line in gate_lines(decision))
    log_decision("gates", f"{decision.label} ({summary or 'no gates'}){table}", level)


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
    config: dict[str, str] | None = None,
) -> EvalOutcome:
    """Raise GateFailed (no retry) when a gate fails; the record keeps figures and decision."""
    # One record per evaluation: a retry in this flow run finds it instead of writing another.
    record_key = key("evaluation", _cache_key(None, locals()), str(flow_run.get_id() or ""))
    mlc = client(home.tracking_uri)
    adapter = fetch_adapter(home, trained.run_id, trained.adapter_artifact)
    started = time.perf_counter()
    recorded = getattr(data, "preprocessing", None) or None
    generative = read_task(adapter) == CAUSAL_LM
    if generative:
        preprocessing = Preprocessing.from_dict(recorded) if recorded else None
        report = score_generative(
            trained, data, spec, gates, registry, max_length, home, mlc, adapter, preprocessing
        )
        profile, facts = None, {}
    else:
        report, profile, facts = _score_classifiers(
            mlc, adapter, trained, data, spec, gates, registry, max_length, home, recorded
        )
    compute_s = time.perf_counter() - started
    decision = decide_gates(report, gates, policy_version)
    record_run_id = record(
        mlc, trained.run_id, registry.model_name, report, decision, config or {}, record_key,
        facts, profile,
    )  # fmt: skip
    log_scores(report, decision)
    create_markdown_artifact(
        key="gate-decision",
        markdown=to_markdown(decision, report),
        description=f"Gates for run {trained.run_id}",
    )
    if report.examples:
        create_table_artifact(
            key="worst-answers",
            table=list(report.examples),
            description=f"Lowest ROUGE-L answers of run {trained.run_id} on the eval split",
        )
    if not decision.passed:
        raise GateFailed(
            f"gate failed, nothing registered: {'; '.join(decision.failures())} "
            f"(evaluation record {record_run_id}, MLflow run {trained.run_id})"
        )
    pinned = None
    if generative:  # how the registered generator answers: as it was evaluated
        system = getattr(data, "system_prompt", "") or None
        pinned = {"generation": spec.generation.model_dump(mode="json"), "system_prompt": system}
    return EvalOutcome(
        trained.run_id, report.candidate.metrics, decision, report, record_run_id, recorded,
        compute_s, time.time(), pinned,
    )  # fmt: skip


def _score_classifiers(
    mlc, adapter, trained, data, spec, gates, registry, max_length, home, recorded
):  # fmt: skip
    """The classifiers' evaluation: (report, reference profile for the monitor, how it was
    computed: precision and its reason, base scores cached)."""
    from tasks.core.evaluation.scoring import evaluate_models

    precision = eval_precision(spec)
    candidate, champion, champion_version, base = _models(
        mlc, adapter, trained.run_id, recorded, gates, registry, home, precision
    )
    bar, log = ScoringProgress(), ProgressLog(get_run_logger())
    for model in (candidate, champion, base):
        if model is not None:
            model.on_progress = partial(_both, bar, log)
    try:
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
    finally:
        bar.close()
    cached = {
        "eval.base_scores_cached": str(base is not None and base.hit),
        "eval.champion_scores_cached": str(getattr(champion, "hit", False)),
    }
    profile = reference_profile(candidate, data.prepared_path, spec, max_length, report)
    return report, profile, precision.params("eval") | cached


def _models(mlc, adapter, run_id, recorded, gates, registry, home, precision):
    """(candidate, champion, its version, base scorer): every model the evaluation scores, each
    with the run's preprocessing (the champion with its own) and the chosen precision."""
    from tasks.core.evaluation.scoring import adapter_classifier

    preprocessing = Preprocessing.from_dict(recorded) if recorded else None
    candidate = adapter_classifier(
        adapter, run_id, home.hf_hub_cache, preprocessing, precision.dtype
    )
    candidate.keep_states = True  # the monitor's reference profile comes from this pass
    # Kept for when this run is the champion: later evaluations read instead of scoring it.
    candidate.after = keeper(home.work_dir / "eval-cache" / "runs", run_id, precision.mode)
    champion, champion_version = _champion(mlc, registry.model_name, run_id, home, precision)
    base = None
    if gates.base_model.score:
        base = cached_base(adapter, home, precision, preprocessing)
    return candidate, champion, champion_version, base


def eval_precision(spec: EvalSpec):
    """The evaluation batches' precision on this machine (bf16 autocast where it is native)."""
    from tasks.core.training.precision import resolve

    return resolve(spec.precision)


def cached_base(
    adapter: Path, home: Home, precision, preprocessing: Preprocessing | None
) -> CachedBase:
    """The base model's scorer, reading and filling the cache under the state home; the
    preprocessing is applied before the cache key is taken, so it is part of the key."""
    from tasks.core.evaluation.scoring import base_classifier

    ref, labels = read_base_ref(adapter)
    load = partial(base_classifier, adapter, home.hf_hub_cache, None, precision.dtype)
    return base_scorer(ref, labels, load, home, precision, preprocessing)


def base_scorer(ref, labels, load, home: Home, precision, preprocessing) -> CachedBase:
    """The cache of ``ref``'s scores (``load`` builds the base on a miss): one key for the
    evaluation and for the scoring done while training runs (tasks/base_scores.py)."""
    return CachedBase(
        load=load,
        root=home.work_dir / "eval-cache" / "base",
        repo_id=ref.repo_id,
        revision=ref.revision,
        labels=list(labels),
        seed=BASE_SEED,
        precision=precision.mode,
        source=str(ref),
        preprocess=preprocessing.apply if preprocessing is not None else None,
    )


def _both(bar, log, role: str, done: int, total: int) -> None:
    bar(role, done, total)
    log(role, done, total)


class ProgressLog:
    """Logs each model's scoring progress at about every quarter (the stage's progress in the
    Prefect run log, where no terminal bar is drawn)."""

    def __init__(self, logger):
        self.logger, self.shown = logger, {}

    def __call__(self, role: str, done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter > self.shown.get(role, 0):
            self.shown[role] = quarter
            self.logger.info("scoring %s: %d/%d examples", role, done, total)
