"""The ``finetune`` flow: seven stages, wiring only. Each stage is a retried, cached task."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks.audit import audit_licenses
from tasks.common import key
from tasks.core.config_loader import lineage, load_config
from tasks.core.home import Home
from tasks.discover import discover_models
from tasks.gate import evaluate_and_gate
from tasks.promote import promote_model
from tasks.register import register_model
from tasks.train import train_adapter
from tasks.validate import validate_data


def _run_name() -> str:
    config = Path(flow_run.parameters.get("config_path", "config")).stem
    return f"{config}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="finetune", flow_run_name=_run_name)
def finetune(config_path: str, force: bool = False) -> dict:
    """Discover -> audit -> validate -> fine-tune -> evaluate/gate -> register -> promote.

    ``force`` recomputes every stage instead of reusing cached results.
    """
    loaded = load_config(config_path)
    cfg, home = loaded.config, Home.from_env().ensure()
    tags = lineage(loaded)

    def stage(task):
        return task.with_options(refresh_cache=True) if force else task

    candidates = stage(discover_models)(cfg.discovery, str(home.hf_hub_cache))
    model, audit = stage(audit_licenses)(
        candidates,
        cfg.license,
        loaded.license_policy,
        loaded.license_policy_sha256,
        {cfg.data.name: cfg.data.license},
    )
    data = stage(validate_data)(cfg.data, str(home.work_dir / "prepared"))
    trained = stage(train_adapter)(
        model, data, cfg.lora, cfg.train, cfg.registry, cfg.name, tags, audit, home
    )
    outcome = stage(evaluate_and_gate)(
        trained, data, cfg.eval, cfg.gates, cfg.train.max_length, home
    )
    version_tags = {
        "base_repo_id": model.repo_id,
        "base_revision": model.revision,
        "tokenizer_revision": model.revision,
        "dataset_sha256": data.fingerprint,
        "license_verdict": audit.verdict,
        "validation_verdict": data.verdict,
        "train_run_id": trained.run_id,
        **{k: v for k, v in tags.items() if k != "resolved_config"},
    }
    registration = stage(register_model)(
        outcome, trained.adapter_artifact, cfg.registry, version_tags, home
    )
    promotion = stage(promote_model)(registration, key("decision", outcome.decision), home)
    return {
        "experiment": cfg.name,
        "model": f"{model.repo_id}@{model.revision}",
        "dataset_sha256": data.fingerprint,
        "run_id": trained.run_id,
        "metrics": {
            k: round(v, 4) for k, v in outcome.metrics.items() if k in ("accuracy", "macro_f1")
        },
        "registered": f"{registration.name} v{registration.version}",
        "promotion": f"{promotion.action}: {promotion.reason}",
    }
