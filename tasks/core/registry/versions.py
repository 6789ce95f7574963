"""MLflow model registry I/O: log the pyfunc, register it once per run, read and move aliases.

The model card travels as an artifact of the model and as the version's description.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.promotion.decision import PromotionDecision
from tasks.core.registry.pyfunc import (
    GENERATION_ARTIFACT,
    GENERATOR_SIGNATURE,
    PIP_REQUIREMENTS,
    SIGNATURE,
    LoraClassifierModel,
    LoraGeneratorModel,
)

CHALLENGER, CHAMPION = "challenger", "champion"
# Set when a canary promotes a challenger; `loraflow rollback NAME` restores it.
PREVIOUS_CHAMPION = "previous-champion"
MODEL_ARTIFACT = "model"
# MLflow stores a version description in a VARCHAR(5000) column.
MAX_DESCRIPTION = 5000


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    created: bool


def version_for_run(mlc: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    try:
        found = mlc.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def logged_model_uri(mlc: MlflowClient, run_id: str) -> str | None:
    """The model this run already logged (a retry after a failed registration reuses it)."""
    experiment_id = mlc.get_run(run_id).info.experiment_id
    # status is an integer column: filtering on 'READY' in SQL breaks on PostgreSQL and never
    # matches on SQLite, so the status is checked here instead.
    found = mlc.search_logged_models(
        [experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'",
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


def description_of(card: str, run_id: str) -> str:
    """The model card, cut to what MLflow stores, pointing at the full card when cut."""
    if len(card) <= MAX_DESCRIPTION:
        return card
    note = f"\n\n(cut to fit; full card: runs:/{run_id}/model_card/README.md)"
    return card[: MAX_DESCRIPTION - len(note)].rsplit("\n", 1)[0] + note


def register(
    mlc: MlflowClient,
    name: str,
    run_id: str,
    adapter_dir: Path,
    tags: dict[str, str],
    card: str,
    card_path: Path | None = None,
    extra_artifacts: dict[str, Path] | None = None,
) -> Registration:
    """Register the run's model once: a retry finds the existing version instead of adding one.

    Tags, description and the ``challenger`` alias are (re)applied on every call, so a retry
    that follows a failure half-way still converges on one complete version.
    ``extra_artifacts`` travel with the model (the recorded preprocessing).
    """
    existing = version_for_run(mlc, name, run_id)
    if existing is None:
        model_uri = logged_model_uri(mlc, run_id)
        if model_uri is None:
            artifacts = {"adapter": str(adapter_dir)}
            if card_path is not None:
                artifacts["model_card"] = str(card_path)
            artifacts |= {k: str(v) for k, v in (extra_artifacts or {}).items()}
            with mlflow.start_run(run_id=run_id):
                generator = GENERATION_ARTIFACT in artifacts  # a causal LM: answers, not labels
                model_uri = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=LoraGeneratorModel() if generator else LoraClassifierModel(),
                    artifacts=artifacts,
                    signature=GENERATOR_SIGNATURE if generator else SIGNATURE,
                    pip_requirements=PIP_REQUIREMENTS,
                ).model_uri
        try:
            mlc.get_registered_model(name)
        except MlflowException:
            mlc.create_registered_model(name, description="LoRA fine-tunes managed by loraflow")
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "already exists"
            version, created = mlflow.register_model(model_uri, name, tags=tags), True
    else:
        version, created = existing, False
        for tag, value in tags.items():
            if version.tags.get(tag) != value:
                mlc.set_model_version_tag(name, version.version, tag, value)
    mlc.update_model_version(name, version.version, description=description_of(card, run_id))
    mlc.set_registered_model_alias(name, CHALLENGER, version.version)
    return Registration(name, str(version.version), run_id, created)


def load_alias(mlc: MlflowClient, name: str, alias: str):
    """(version, the pyfunc's LoraClassifierModel) behind ``models:/NAME@ALIAS``, or None.

    The model loads exactly as it is served (``mlflow.pyfunc.load_model``); the unwrapped
    Python model exposes the PEFT model, tokenizer and class names for scoring.
    """
    try:
        version = mlc.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    return version, loaded.unwrap_python_model()


def alias_version(mlc: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(mlc.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def apply_promotion(
    mlc: MlflowClient,
    name: str,
    decision: PromotionDecision,
    when: str,
    by: str = "",
    record: str = "",
) -> None:
    """Move ``champion`` when the decision says so; index the decision on the version.

    A ``noop`` (already champion, or rolled back before) writes nothing: the version's tags
    keep the decision that made it champion or rolled it back. The tags are an index: the
    decision itself is the history record ``record``.
    """
    if decision.action == "noop":
        return
    if decision.action == "promote":
        mlc.set_registered_model_alias(name, CHAMPION, decision.candidate)
    index = {
        "promotion.action": decision.action,
        "promotion.reason": decision.reason,
        "promotion.at": when,
        "promotion.by": by,
        "promotion.record": record,
    }
    for tag, value in index.items():
        if value:
            mlc.set_model_version_tag(name, decision.candidate, tag, value)


def delete_alias(mlc: MlflowClient, name: str, alias: str) -> bool:
    """Remove ``alias`` if it exists; False when there was none."""
    try:
        mlc.delete_registered_model_alias(name, alias)
    except MlflowException:
        return False
    return True
