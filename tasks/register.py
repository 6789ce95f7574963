"""Stage 6 - register: the PEFT model as a new version (once per run) with alias ``challenger``.

The version carries the whole lineage as tags and the generated model card as its
description; the card is also logged with the model and into the run. A retry (Prefect's, or
a re-run after a gate change) finds the run's version instead of adding one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import yaml
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import log_decision, stage_options
from tasks.core.config.experiment import RegistrySpec
from tasks.core.data.preprocess import Preprocessing
from tasks.core.digests import key
from tasks.core.home import Home
from tasks.core.monitoring.profile import ARTIFACT as PROFILE_ARTIFACT
from tasks.core.monitoring.profile import MODEL_ARTIFACT as PROFILE_MODEL_ARTIFACT
from tasks.core.registry import model_card
from tasks.core.registry.history import Decision, actor_pipeline, append, user
from tasks.core.registry.lineage import EVALUATION_TAG
from tasks.core.registry.pyfunc import GENERATION_ARTIFACT, PREPROCESSING_ARTIFACT
from tasks.core.registry.versions import Registration, register
from tasks.core.tracking import client
from tasks.core.training.refs import drop_peft_template_card
from tasks.gate import EvalOutcome, fetch_adapter

# Recorded on the version, never keyed: a new commit or flow run alone must not re-register.
UNKEYED_TAGS = ("git_commit", "prefect.flow_run_id", "retrain.cause")
HEADLINE_METRICS = (
    "accuracy", "macro_f1", "ece", "latency_ms_per_example", "exact_match", "rouge_l",
    "format_valid", "refusal_rate", "empty_rate", "perplexity",
)  # fmt: skip


def _cache_key(context, params) -> str:
    outcome: EvalOutcome = params["outcome"]
    tags = {k: v for k, v in params["tags"].items() if k not in UNKEYED_TAGS}
    return key(
        "register",
        outcome.run_id,
        outcome.decision,
        getattr(outcome, "preprocessing", None),
        params["registry"],
        tags,
        params["home"].tracking_uri,
    )


def _run_record(run_id: str, path: str, loader) -> dict:
    """A JSON/YAML record the training run logged ({} when absent)."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception:  # an older run without this record: the card says '?'
        return {}
    data = loader(text)
    return data if isinstance(data, dict) else {}


def _reference_profile(record_run_id: str, folder: Path, home: Home) -> Path | None:
    """The evaluation record's reference profile, to register with the model (the service
    reads its vocabulary; the monitor compares live windows with it); None when absent."""
    if not record_run_id:
        return None
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{record_run_id}/{PROFILE_ARTIFACT}",
            dst_path=str(folder / "profile"),
            tracking_uri=home.tracking_uri,
        )
    except Exception:  # an evaluation recorded before profiles existed
        return None
    return Path(local)


def version_tags(outcome: EvalOutcome, tags: dict[str, str]) -> dict[str, str]:
    """Lineage tags + the gate decision with every gate's figure, as the version's tags."""
    decision = outcome.decision
    gate_tags = {
        f"gate.{g.gate}": (
            f"{g.status}: {'-' if g.figure is None else f'{g.figure:.4f}'}"
            + ("" if g.threshold is None else f" {g.op} {g.threshold}")
        )
        for g in decision.gates
    }
    metric_tags = {
        f"metric.{k}": f"{outcome.metrics[k]:.4f}" for k in HEADLINE_METRICS if k in outcome.metrics
    }
    report = outcome.report
    compared = {}
    if report is not None:
        compared["champion_compared"] = report.champion_version or "none"
        if report.base is not None and "accuracy" in report.base.metrics:
            compared["base.accuracy"] = f"{report.base.metrics['accuracy']:.4f}"
    return {
        **tags,
        EVALUATION_TAG: outcome.record_run_id,
        "gate_decision": decision.label,
        "gate_policy_version": decision.policy_version or tags.get("gate_policy_version", ""),
        **gate_tags,
        **metric_tags,
        **compared,
        "registered_by": user(),
    }


def record_registration(
    mlc, reg: Registration, outcome: EvalOutcome, config_sha256: str, card: Path
) -> str:
    """The registration as its own decision record (once per version and evaluation)."""
    what = "registered as a new version" if reg.created else "already registered (kept)"
    decision = Decision(
        kind="registration",
        model=reg.name,
        outcome="registered" if reg.created else "kept",
        reason=f"v{reg.version} {what} from evaluation {outcome.record_run_id or '?'}; "
        "alias challenger",
        actor=actor_pipeline(),
        version=reg.version,
        train_run_id=reg.run_id,
        config_sha256=config_sha256,
        details={"evaluation_run_id": outcome.record_run_id, "created": reg.created},
        key=f"registration:{reg.run_id}:{outcome.record_run_id}",
    )
    experiment_id = mlc.get_run(reg.run_id).info.experiment_id
    return append(mlc, experiment_id, decision, files={"model_card": card})


@task(
    name="register",
    task_run_name="register {registry.model_name}",
    timeout_seconds=600,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def register_model(
    outcome: EvalOutcome,
    adapter_artifact: str,
    registry: RegistrySpec,
    tags: dict[str, str],
    home: Home,
) -> Registration:
    mlc = client(home.tracking_uri)
    adapter = fetch_adapter(home, outcome.run_id, adapter_artifact)
    all_tags = version_tags(outcome, tags)
    card = ""
    if outcome.report is not None:
        card = model_card.render(
            registry.model_name,
            all_tags,
            outcome.report,
            outcome.decision,
            registry,
            _run_record(outcome.run_id, "audit/license.json", yaml.safe_load),
            _run_record(outcome.run_id, "data/validation.json", yaml.safe_load),
            _run_record(outcome.run_id, "config/resolved.yaml", yaml.safe_load),
        )
    drop_peft_template_card(adapter)  # adapters trained before it was dropped at save time
    with tempfile.TemporaryDirectory() as tmp:
        card_path = Path(tmp) / "README.md"
        card_path.write_text(card)
        extra = {}
        if getattr(outcome, "preprocessing", None):
            path = Path(tmp) / f"{PREPROCESSING_ARTIFACT}.json"
            extra[PREPROCESSING_ARTIFACT] = Preprocessing.from_dict(outcome.preprocessing).write(
                path
            )
        profile = _reference_profile(outcome.record_run_id, Path(tmp), home)
        if profile is not None:
            extra[PROFILE_MODEL_ARTIFACT] = profile
        if getattr(outcome, "generation", None):  # a generator: its pinned decoding settings
            path = Path(tmp) / f"{GENERATION_ARTIFACT}.json"
            path.write_text(json.dumps(outcome.generation, indent=2))
            extra[GENERATION_ARTIFACT] = path
        description = model_card.without_front_matter(card)
        reg = register(
            mlc, registry.model_name, outcome.run_id, adapter, all_tags, description, card_path,
            extra,
        )  # fmt: skip
        record_registration(mlc, reg, outcome, tags.get("config_sha256", ""), card_path)
    steps = (
        Preprocessing.from_dict(outcome.preprocessing).describe()
        if outcome.preprocessing
        else "none recorded"
    )
    log_decision(
        "register",
        f"{reg.name} v{reg.version} ({'new' if reg.created else 'existing, idempotent'}), alias "
        f"challenger; served with preprocessing: {steps}",
    )
    create_markdown_artifact(
        key="registration",
        markdown=(
            f"## Registered `{reg.name}` version {reg.version}\n\n"
            f"{'new version' if reg.created else 'existing version for this run (idempotent)'}; "
            f"alias `challenger` -> v{reg.version}; MLflow run `{reg.run_id}`.\n\n"
            f"Model card: in the version's registration record and the model's artifacts."
        ),
        description="Model registry",
    )
    return reg
