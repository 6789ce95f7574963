"""The canary steps of the promotion flow: lease the share, drive traffic, judge, record.

Canary tasks observe a live service, so none of them is cached and none retries: a retried
step would judge different traffic. Each step holds the challenger's share as a lease that
it renews while it runs (``tasks/core/promotion/lease.py``); each step, the outcome and an
abort are records of the decision history, nested under the canary's MLflow run.
"""

from __future__ import annotations

import json
import tempfile
import time
from logging import INFO, WARNING
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from tasks.common import log_decision
from tasks.core.config.canary import CanaryPolicy
from tasks.core.errors import CanaryEnded, DataError
from tasks.core.home import Home
from tasks.core.promotion.canary import (
    StepAnalysis,
    analyse,
    shadow_compared,
    to_markdown,
    version_figures,
)
from tasks.core.promotion.canary_io import (
    abort_record,
    apply_abort,
    apply_promote,
    apply_rollback,
    read_lease,
    write_lease,
)
from tasks.core.promotion.decision import PromotionDecision
from tasks.core.promotion.lease import LeaseKeeper, granted
from tasks.core.registry.history import actor_canary, append_about_version
from tasks.core.registry.versions import CHAMPION, alias_version
from tasks.core.serving.replay import load_examples, replay, replay_endpoint
from tasks.core.serving.runner import scrape, wait_ready
from tasks.core.serving.telemetry import parse_snapshot
from tasks.core.tracking import client, ensure_experiment


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(mlc, model_name: str, version: str, run_id: str, **fields) -> str:
    """A canary decision about ``version``, nested under the canary run ``run_id``."""
    return append_about_version(mlc, model_name, version, parent_run_id=run_id, **fields)


@task(name="replay-data", task_run_name="replay data of v{version}", cache_policy=NONE)
def replay_source(model_name: str, version: str, replay_path: str | None, home: Home) -> str:
    """Examples to replay: ``replay_path``, else the eval split the version was trained with
    (``prepared_path`` in its training run's ``data/validation.json``)."""
    if replay_path:
        if not Path(replay_path).exists():
            raise DataError(f"replay data not found: {replay_path}")
        return str(Path(replay_path).resolve())
    mlc = client(home.tracking_uri)
    run_id = mlc.get_model_version(model_name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="data/validation.json",
                dst_path=tmp,
                tracking_uri=home.tracking_uri,
            )
        except (MlflowException, OSError):
            local = None
        prepared = json.loads(Path(local).read_text()).get("prepared_path") if local else None
    if not prepared or not Path(prepared).is_dir():
        raise DataError(
            f"{model_name} v{version}: its training run {run_id} has no prepared eval split "
            f"on this machine ({prepared or 'no data/validation.json'}); pass the data with "
            "--data PATH (a prepared dataset folder or a JSONL file of text/label)"
        )
    return prepared


@task(name="canary-run", task_run_name="open canary run v{decision.candidate}", cache_policy=NONE)
def open_canary_run(
    model_name: str, decision: PromotionDecision, policy: CanaryPolicy, home: Home
) -> str:
    """An MLflow run of type canary, in the experiment of the challenger's training run."""
    mlc = client(home.tracking_uri)
    version = mlc.get_model_version(model_name, decision.candidate)
    try:
        experiment_id = mlc.get_run(version.run_id).info.experiment_id
    except MlflowException:
        experiment_id = ensure_experiment(mlc, "loraflow", home.mlflow_artifacts)
    run = mlc.create_run(
        experiment_id,
        run_name=f"canary-{model_name}-v{decision.candidate}",
        tags={
            "loraflow.run_type": "canary",
            "model_name": model_name,
            "challenger_version": decision.candidate,
            "champion_version": decision.champion or "",
            "canary_policy_version": policy.version,
            "train_run_id": version.run_id or "",
            "prefect.flow_run_id": str(flow_run.get_id() or ""),
        },
    )
    mlc.log_dict(run.info.run_id, policy.model_dump(mode="json"), "canary/policy.json")
    return run.info.run_id


def _served_as_planned(decision: PromotionDecision, percent: float):
    def check(state: dict) -> bool:
        return (
            state.get("champion") == decision.champion
            and state.get("challenger") == decision.candidate
            and float(state.get("challenger_percent") or 0) == percent
        )

    return check


@task(
    name="canary-step",
    task_run_name="canary v{decision.candidate} step {step}",
    cache_policy=NONE,
    timeout_seconds=3600,
)
def canary_step(
    url: str,
    model_name: str,
    decision: PromotionDecision,
    step: int,
    policy: CanaryPolicy,
    examples_path: str | None,
    history: list[StepAnalysis],
    run_id: str,
    home: Home,
) -> StepAnalysis:
    """Lease the step's share, wait for the service to apply it, drive traffic, judge the step."""
    mlc = client(home.tracking_uri)
    percent, spec = policy.steps[step - 1], policy.analysis
    lease = granted(percent, run_id, decision.candidate, step, spec.lease_seconds)
    keeper = LeaseKeeper(
        lease,
        spec.lease_seconds,
        write=lambda new: write_lease(mlc, model_name, new),
        read=lambda: read_lease(mlc, model_name),
    )
    with keeper:
        wait_ready(url, spec.settle_seconds, until=_served_as_planned(decision, percent))
        before, started = parse_snapshot(scrape(url)), time.monotonic()
        replayed = _drive(url, decision, step, percent, policy, examples_path)
        while time.monotonic() - started < spec.interval_seconds and not keeper.revoked:
            time.sleep(min(1.0, spec.interval_seconds))
        after = _closing_scrape(url, before, decision, policy, keeper)
    if keeper.revoked:  # somebody ended the canary (``loraflow rollback``): stop here
        raise CanaryEnded(f"canary of v{decision.candidate} ended while it ran: {keeper.revoked}")
    analysis = analyse(
        step, policy.steps, before, after, decision.champion, decision.candidate, spec, history
    )
    _record_step(mlc, run_id, model_name, analysis, replayed)
    level = WARNING if analysis.outcome == "rollback" else INFO
    log_decision(
        "canary", f"step {step} ({percent:g} %): {analysis.outcome}: {analysis.reason}", level
    )
    return analysis


def _closing_scrape(url, before, decision: PromotionDecision, policy, keeper):
    """The step's last scrape, once the champion has shadow-scored ``min_requests`` of the
    challenger's texts (or all it answered, if fewer): its scoring trails the answers, and on a
    loaded machine the 100 % step had been judged on 2 of them. At most ``settle_seconds``
    more; no wait without shadows."""
    spec = policy.analysis
    deadline = time.monotonic() + spec.settle_seconds
    while True:
        after = parse_snapshot(scrape(url))
        answered = version_figures(before, after, decision.candidate).requests
        compared = shadow_compared(before, after, decision.candidate, decision.champion)
        if (
            not policy.serving.shadow_champion
            or compared >= min(spec.min_requests, answered)
            or keeper.revoked
            or time.monotonic() >= deadline
        ):
            return after
        time.sleep(0.2)


def _drive(url, decision: PromotionDecision, step: int, percent: float, policy, examples_path):
    """Replay held-out examples until both models served enough (None without replay)."""
    if not (policy.replay.enabled and examples_path):
        return None
    spec = policy.analysis
    need = max(spec.min_requests, spec.min_feedback if policy.replay.post_feedback else 0)

    def enough(counts: dict[str, int]) -> bool:
        champion_ok = percent >= 100 or counts.get(decision.champion, 0) >= need
        return counts.get(decision.candidate, 0) >= need and champion_ok

    examples = load_examples(examples_path, policy.replay.max_examples)
    prefix = f"canary-v{decision.candidate}-{step}"
    endpoint = replay_endpoint(examples_path)
    return replay(url, examples, policy.replay, enough, key_prefix=prefix, endpoint=endpoint)


def _record_step(mlc, run_id: str, model_name: str, analysis: StepAnalysis, replayed) -> None:
    stamp, n = int(time.time() * 1000), analysis.step
    figures = {
        "canary_percent": analysis.percent,
        "challenger_requests": analysis.challenger.requests,
        "champion_requests": analysis.champion.requests,
        "challenger_error_rate": analysis.challenger.error_rate,
        "challenger_p95_ms": analysis.challenger.p95_ms,
        "champion_p95_ms": analysis.champion.p95_ms,
        "agreement": analysis.agreement,
        "challenger_online_accuracy": analysis.challenger.online_accuracy,
        "champion_online_accuracy": analysis.champion.online_accuracy,
    }
    present = {k: float(v) for k, v in figures.items() if v is not None}
    mlc.log_batch(run_id, metrics=[Metric(k, v, stamp, n) for k, v in present.items()])
    _record(
        mlc,
        model_name,
        analysis.challenger.version,
        run_id,
        kind="canary-step",
        outcome=analysis.outcome,
        reason=f"step {n} at {analysis.percent:g} %: {analysis.reason}",
        actor=actor_canary(),
        figures=present,
        details=analysis.to_dict() | {"replay": replayed.__dict__ if replayed else None},
        key=f"canary-step:{run_id}:{n}",
    )
    replay_line = (
        f"\n\nReplayed {replayed.sent} held-out examples in {replayed.seconds} s "
        f"({replayed.failed} failed, {replayed.feedback} labelled)."
        if replayed
        else ""
    )
    create_markdown_artifact(
        key="canary-step",
        markdown=to_markdown(model_name, analysis) + replay_line,
        description=f"{model_name} v{analysis.challenger.version} step {n}",
    )


@task(
    name="canary-decision",
    task_run_name="decide v{decision.candidate}",
    cache_policy=NONE,
)
def finish_canary(
    model_name: str,
    decision: PromotionDecision,
    history: list[StepAnalysis],
    run_id: str,
    home: Home,
) -> PromotionDecision:
    """Apply the last step's outcome to the registry and record it (run, version, artifact)."""
    mlc = client(home.tracking_uri)
    last, when, candidate = history[-1], _now(), decision.candidate
    if last.outcome == "promote":
        reason = (
            f"canary promoted version {candidate} over {decision.champion} after "
            f"{len(history)} steps ({' -> '.join(f'{s.percent:g} %' for s in history)})"
        )
        apply_promote(mlc, model_name, candidate, reason, when, run_id)
        final = PromotionDecision("promote", candidate, candidate, reason)
    else:
        reason = f"canary rolled back version {candidate} at {last.reason}"
        failed = last.failed[0].name if last.failed else "incomplete"
        apply_rollback(mlc, model_name, candidate, failed, reason, last.to_dict(), when, run_id)
        final = PromotionDecision("rollback", candidate, decision.champion, reason)
    record_id = _record(
        mlc,
        model_name,
        candidate,
        run_id,
        kind="canary-outcome",
        outcome=final.action,
        reason=reason,
        actor=actor_canary(),
        details={"steps": [s.to_dict() for s in history], "champion_before": decision.champion},
        key=f"canary-outcome:{run_id}",
    )
    for tag, value in (("promotion.by", actor_canary()), ("promotion.record", record_id)):
        mlc.set_model_version_tag(model_name, candidate, tag, value)
    mlc.set_tag(run_id, "canary.outcome", final.action)
    mlc.set_terminated(run_id, "FINISHED")
    champion = alias_version(mlc, model_name, CHAMPION)
    level = WARNING if final.action == "rollback" else INFO
    log_decision("promote", f"{final.action}: {reason}; champion is v{champion}", level)
    create_markdown_artifact(
        key="promotion",
        markdown=f"## Promotion: **{final.action}**\n\n{reason}\n\nchampion is now v{champion}.",
        description=f"{model_name} v{candidate}",
    )
    return final


@task(name="canary-abort", task_run_name="abort canary v{decision.candidate}", cache_policy=NONE)
def abort_canary(
    model_name: str, decision: PromotionDecision, error: str, run_id: str | None, home: Home
) -> None:
    """The canary broke (service, data) or was ended: route nothing to the challenger, say why."""
    mlc = client(home.tracking_uri)
    apply_abort(mlc, model_name, decision.candidate, error, _now())
    abort_record(mlc, model_name, decision.candidate, error, actor_canary(), run_id or "")
    if run_id:
        mlc.set_tag(run_id, "canary.outcome", "aborted")
        mlc.set_terminated(run_id, "FAILED")


@task(name="canary-ended", task_run_name="canary run {run_id:.8} ended by hand", cache_policy=NONE)
def close_canary_run(run_id: str, home: Home) -> None:
    """Somebody ended the canary (and recorded why): close its run as KILLED."""
    mlc = client(home.tracking_uri)
    mlc.set_tag(run_id, "canary.outcome", "ended")
    mlc.set_terminated(run_id, "KILLED")
