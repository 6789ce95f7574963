"""Stage 5 - evaluate + gate: score the adapter on the eval split and decide registration."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import key, stage_options
from tasks.core.config import EvalSpec, GateSpec
from tasks.core.data import DataReport
from tasks.core.errors import GateFailed
from tasks.core.evaluation import evaluate_adapter
from tasks.core.gates import GateDecision, decide, to_markdown
from tasks.core.home import Home
from tasks.core.tracking import client
from tasks.core.training import TrainResult


@dataclass(frozen=True)
class EvalOutcome:
    run_id: str
    metrics: dict[str, float]
    decision: GateDecision


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
    return key(
        "evaluate",
        params["trained"].run_id,
        params["data"].fingerprint,
        params["spec"],
        params["gates"],
        params["max_length"],
        params["home"].tracking_uri,
    )


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
    max_length: int,
    home: Home,
) -> EvalOutcome:
    """Raise GateFailed (no retry) when a gate fails; the run keeps the figures and the decision."""
    mlc = client(home.tracking_uri)
    adapter = fetch_adapter(home, trained.run_id, trained.adapter_artifact)
    metrics = evaluate_adapter(
        adapter, data.prepared_path, spec.batch_size, max_length, home.hf_hub_cache
    )
    decision = decide(metrics, gates)
    stamp = int(time.time() * 1000)
    mlc.log_batch(
        trained.run_id, metrics=[Metric(f"eval_{k}", v, stamp, 0) for k, v in metrics.items()]
    )
    mlc.log_dict(trained.run_id, decision.to_dict(), "gates/decision.json")
    mlc.set_tag(trained.run_id, "gate_decision", decision.label)
    create_markdown_artifact(
        key="gate-decision",
        markdown=to_markdown(decision),
        description=f"Gates for run {trained.run_id}",
    )
    if not decision.passed:
        raise GateFailed(f"gate failed, nothing registered: {'; '.join(decision.failures())}")
    return EvalOutcome(trained.run_id, metrics, decision)
