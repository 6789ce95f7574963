"""Stage 7 - promote: the first passing version becomes champion; later ones go to the canary.

``promote_model`` is the pipeline's last task; ``plan_promotion`` the first step of the
promotion flow (``flows/promote.py``), whose canary steps are in ``tasks/canary.py``. Each
decision that changes something is a record of the decision history; the version's
``promotion.*`` tags are the index of the latest one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.common import log_decision, stage_options
from tasks.core.digests import key
from tasks.core.errors import NothingToPromote, PromotionForbidden
from tasks.core.home import Home
from tasks.core.promotion.canary_io import (
    rolled_back_reason,
)
from tasks.core.promotion.decision import PromotionDecision, decide_promotion
from tasks.core.registry.history import (
    actor_cli,
    actor_pipeline,
    append_about_version,
    forbidden,
    user,
)
from tasks.core.registry.versions import (
    CHALLENGER,
    CHAMPION,
    Registration,
    alias_version,
    apply_promotion,
)
from tasks.core.tracking import client


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cache_key(context, params) -> str:
    return key(
        "promote",
        params["registration"],
        params["decision_ref"],
        params["home"].tracking_uri,
        params.get("canary", False),
    )


def record_promotion(mlc, name: str, decision: PromotionDecision, actor: str) -> str | None:
    """Apply a promotion decision and record it (nothing for a ``noop``: the version keeps the
    record of the decision that made it champion or rolled it back). The alias moves inside
    the record's writing, so a registry that refuses the move (an identity without the
    promoter role) leaves no record claiming it: ``PromotionForbidden``."""
    if decision.action == "noop":
        return None
    actor = actor or actor_cli()

    def move() -> None:
        if decision.action == "promote":
            mlc.set_registered_model_alias(name, CHAMPION, decision.candidate)

    try:
        record_id = append_about_version(
            mlc, name, decision.candidate, kind="promotion", outcome=decision.action,
            reason=decision.reason, actor=actor, details={"champion_before": decision.champion},
            effect=move,
        )  # fmt: skip
    except MlflowException as exc:
        if not forbidden(exc):
            raise
        raise PromotionForbidden(
            f"{name}: the registry refused to make v{decision.candidate} {CHAMPION} for "
            f"{user()} ({exc.message}); a promoter runs `loraflow promote {name}`"
        ) from None
    apply_promotion(mlc, name, decision, _now(), by=actor, record=record_id)
    return record_id


def awaiting_promoter(mlc, name: str, decision: PromotionDecision, why: str) -> PromotionDecision:
    """The pipeline may not promote: record that the version waits for a promoter."""
    waiting = PromotionDecision("awaiting-promoter", decision.candidate, decision.champion, why)
    record_promotion(mlc, name, waiting, actor_pipeline())
    return waiting


@task(
    name="promote",
    task_run_name="promote {registration.name} v{registration.version}",
    timeout_seconds=300,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def promote_model(
    registration: Registration, decision_ref: str, home: Home, canary: bool = False
) -> PromotionDecision:
    """``decision_ref`` (the gate decision's hash) ties this stage's cache to the evaluation;
    ``canary``: a canary policy is configured, so a challenger goes to the promotion flow."""
    mlc = client(home.tracking_uri)
    name, version = registration.name, registration.version
    decision = decide_promotion(
        version,
        alias_version(mlc, name, CHAMPION),
        canary=canary,
        rolled_back=rolled_back_reason(mlc, name, version),
    )
    try:
        record_promotion(mlc, name, decision, actor_pipeline())
    except PromotionForbidden as refused:  # an authenticated stack: workers never move champion
        decision = awaiting_promoter(mlc, name, decision, str(refused))
    log_decision("promote", f"{decision.action} v{version}: {decision.reason}")
    create_markdown_artifact(
        key="promotion",
        markdown=f"## Promotion: **{decision.action}**\n\n{decision.reason}",
        description=f"{name} v{version}",
    )
    return decision


@task(name="promotion-plan", task_run_name="plan {model_name}", cache_policy=NONE)
def plan_promotion(
    model_name: str, version: str | None, home: Home, actor: str = ""
) -> PromotionDecision:
    """Which version against which champion; the first champion is promoted right here."""
    mlc = client(home.tracking_uri)
    candidate = version or alias_version(mlc, model_name, CHALLENGER)
    if candidate is None:
        raise NothingToPromote(f"{model_name}: no '{CHALLENGER}' alias and no --version given")
    try:
        mlc.get_model_version(model_name, candidate)
    except MlflowException:
        raise NothingToPromote(f"{model_name}: no version {candidate!r}") from None
    decision = decide_promotion(
        candidate,
        alias_version(mlc, model_name, CHAMPION),
        canary=True,
        rolled_back=rolled_back_reason(mlc, model_name, candidate),
    )
    if decision.action == "promote":
        record_promotion(mlc, model_name, decision, actor)
    elif decision.action == "canary" and alias_version(mlc, model_name, CHALLENGER) != candidate:
        mlc.set_registered_model_alias(model_name, CHALLENGER, candidate)  # what the service loads
    create_markdown_artifact(
        key="promotion-plan",
        markdown=f"## Promotion plan: **{decision.action}**\n\n{decision.reason}",
        description=f"{model_name} v{candidate}",
    )
    return decision
