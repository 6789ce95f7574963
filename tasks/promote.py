"""Stage 7 - promote: the first passing version becomes champion; later ones go to the canary."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import key, stage_options
from tasks.core.home import Home
from tasks.core.promotion import PromotionDecision, decide
from tasks.core.registry import CHAMPION, Registration, alias_version, apply_promotion
from tasks.core.tracking import client


def _cache_key(context, params) -> str:
    return key(
        "promote", params["registration"], params["decision_ref"], params["home"].tracking_uri
    )


@task(
    name="promote",
    task_run_name="promote {registration.name} v{registration.version}",
    timeout_seconds=300,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def promote_model(registration: Registration, decision_ref: str, home: Home) -> PromotionDecision:
    """``decision_ref`` (the gate decision's hash) ties this stage's cache to the evaluation."""
    mlc = client(home.tracking_uri)
    decision = decide(registration.version, alias_version(mlc, registration.name, CHAMPION))
    apply_promotion(
        mlc, registration.name, decision, datetime.now(UTC).isoformat(timespec="seconds")
    )
    mlc.set_tag(registration.run_id, "promotion", f"{decision.action}: {decision.reason}")
    create_markdown_artifact(
        key="promotion",
        markdown=f"## Promotion: **{decision.action}**\n\n{decision.reason}",
        description=f"{registration.name} v{registration.version}",
    )
    return decision
