"""The ``promotion`` flow: canary a challenger against the champion, promote or roll back.

Wiring only. It runs on its own (``loraflow promote NAME``, a deployment) and as the last
stage of the ``finetune`` flow (``promote_stage``). Without a live service it starts one
in-process on an ephemeral loopback port and replays held-out examples through it; with
``service_url`` it drives a running ``loraflow serve`` through the registry it follows.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from tasks.canary import (
    abort_canary,
    canary_step,
    close_canary_run,
    finish_canary,
    open_canary_run,
    replay_source,
)
from tasks.common import refreshed
from tasks.core.config.canary import CanarySpec
from tasks.core.config.loader import load_canary_policy
from tasks.core.errors import CanaryEnded, CanaryRolledBack
from tasks.core.home import CANARY_POLICY, SLO_POLICY, Home
from tasks.core.ops.processes import register_process
from tasks.core.promotion.decision import PromotionDecision
from tasks.core.registry.history import actor_pipeline
from tasks.core.registry.versions import Registration
from tasks.core.serving.runner import loopback_service
from tasks.promote import check_error_budget, plan_promotion, promote_model


@flow(name="promotion", flow_run_name="promote {model_name}")
def promotion(
    model_name: str,
    version: str | None = None,
    policy_path: str | None = None,
    replay_path: str | None = None,
    service_url: str | None = None,
    actor: str = "",
    slo_path: str | None = None,
    prometheus_url: str | None = None,
) -> PromotionDecision:
    """Promote ``version`` (default: the ``challenger`` alias) of ``model_name`` through the
    canary steps of ``policy_path`` (default: configs/policies/canary.yaml). ``actor``: who
    asked (the pipeline, or the CLI's user), recorded with a direct promotion. No canary
    starts while an SLO's error budget (``slo_path``, default configs/policies/slo.yaml) is
    spent: exit 3, recorded."""
    home = Home.from_env().ensure()
    register_process(home, "promotion", str(flow_run.get_id() or ""))
    policy = load_canary_policy(policy_path or CANARY_POLICY)
    decision = plan_promotion(model_name, version, home, actor)
    if decision.action != "canary":
        return decision
    check_error_budget(
        model_name, decision, slo_path or str(SLO_POLICY), service_url, prometheus_url, actor, home
    )
    examples = (
        replay_source(model_name, decision.candidate, replay_path, home)
        if policy.replay.enabled
        else None
    )
    run_id = open_canary_run(model_name, decision, policy, home)
    history = []
    try:
        with loopback_service(model_name, policy.serving, home.tracking_uri, service_url) as url:
            for step in range(1, len(policy.steps) + 1):
                analysis = canary_step(
                    url, model_name, decision, step, policy, examples, history, run_id, home
                )
                history.append(analysis)
                if analysis.outcome != "continue":
                    break
    except CanaryEnded:
        close_canary_run(run_id, home)  # ended by hand: the one who ended it recorded why
        raise
    except Exception as exc:
        abort_canary(model_name, decision, f"{type(exc).__name__}: {exc}", run_id, home)
        raise
    final = finish_canary(model_name, decision, history, run_id, home)
    if final.action == "rollback":
        raise CanaryRolledBack(final.reason)
    return final


def promote_stage(
    registration: Registration, decision_ref: str, canary: CanarySpec, home: Home, force=False
) -> PromotionDecision:
    """The pipeline's last stage: the first champion directly, later versions by canary when
    the experiment names a canary policy (else they wait for `loraflow promote`)."""
    decision = refreshed(promote_model, force)(
        registration, decision_ref, home, canary=canary.policy_file is not None
    )
    if decision.action != "canary":
        return decision
    return promotion(
        model_name=registration.name,
        version=registration.version,
        policy_path=str(canary.policy_file),
        actor=actor_pipeline(),
    )
