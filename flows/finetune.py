"""The ``finetune`` flow: seven stages (registration with its serving-form step), wiring only.
Each stage is a retried, cached task."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.promote import promote_stage
from flows.train_deployment import train_stage
from flows.validate_data import audited_model_and_data
from tasks.base_scores import score_base_during_training
from tasks.common import log_decision, refreshed
from tasks.core.config.loader import lineage, load_config
from tasks.core.config.preflight import check_model, preflight
from tasks.core.digests import key
from tasks.core.evaluation.gates import gate_lines
from tasks.core.home import Home
from tasks.core.ops.processes import register_process
from tasks.gate import evaluate_and_gate
from tasks.register import register_model
from tasks.serving_form import build_serving_form, export_early
from tasks.train import TrainingInputs


def _run_name() -> str:
    """'EXPERIMENT: MODEL on DATASET @ time', so the UI's run list says what each run is."""
    path = flow_run.parameters.get("config_path", "config")
    when = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        cfg = load_config(path).config
    except Exception:  # a bad config fails in the flow body, with its own message
        return f"{Path(path).stem}-{when}"
    model = cfg.discovery.repo_id or f"discovered {cfg.discovery.task} model"
    return f"{cfg.name}: {model} on {cfg.data.name} @ {when}"


def fresh(seconds: float, finished_at: float, since: float) -> float:
    """A stage's compute seconds if it ran in this flow run, 0 for a cached result."""
    return seconds if finished_at >= since else 0.0


def _base_figures(outcome) -> dict:
    """A generator's base model without adapter, same figures: what the adapter learnt."""
    base = outcome.report.base if outcome.report is not None else None
    if base is None or not outcome.report.generative:
        return {}
    keys = ("exact_match", "rouge_l", "format_valid")
    return {"base model": {k: round(v, 4) for k, v in base.metrics.items() if k in keys}}


@flow(name="finetune", flow_run_name=_run_name)
def finetune(config_path: str, force: bool = False, cause: str = "") -> dict:
    """Discover -> audit -> validate -> fine-tune -> evaluate/gate -> register -> promote.

    ``force`` recomputes every stage instead of reusing cached results. ``cause``: the event
    that started this run (a deployment trigger fills it in), recorded on the version.
    """
    started = time.time()
    loaded = load_config(config_path)
    cfg, home = loaded.config, Home.from_env().ensure()
    register_process(home, "finetune", str(flow_run.get_id() or ""))
    preflight(loaded, home.hf_hub_cache)  # what would fail after training fails now
    tags = lineage(loaded)
    if cause:
        log_decision("retrain", f"started by {cause}")

    model, audit, data = audited_model_and_data(loaded, home, tags, force)
    check_model(cfg.lora, model, home.hf_hub_cache)
    inputs = TrainingInputs(model, data, cfg.lora, cfg.train, cfg.registry, cfg.name, tags, audit)
    # The base model's scores, from a thread of this process while the training processes run.
    base = score_base_during_training.submit(
        model.repo_id, model.revision, model.parameters, data, cfg.eval, cfg.gates, cfg.train, home
    )
    trained = train_stage(inputs, home, force)  # in-process, or the deployment on train.work_pool
    base.wait()  # its scores are cached for the evaluation; a failure only means it scores them
    outcome = refreshed(evaluate_and_gate, force)(
        trained, data, cfg.eval, cfg.gates, cfg.registry, cfg.train.max_length, home,
        loaded.gate_policy_version,
        {"config_sha256": tags["config_sha256"], "resolved_config": tags["resolved_config"]},
    )  # fmt: skip
    # The serving form's export, from a thread while the registration runs; only after a
    # training of this run (a cached one finds its serving form cached too).
    export = None
    if trained.finished_at >= started:
        export = export_early.submit(
            trained.run_id, trained.adapter_artifact, data, cfg.gates, cfg.train.task,
            cfg.train.max_length, home,
        )  # fmt: skip
    version_tags = {
        "base_repo_id": model.repo_id,
        "base_revision": model.revision,
        "tokenizer_repo_id": model.repo_id,  # the adapter ships the base's tokenizer
        "tokenizer_revision": model.revision,
        "data_name": cfg.data.name,
        "dataset_sha256": data.fingerprint,
        **(
            {"chat_template_sha256": data.chat_template_sha256} if data.chat_template_sha256 else {}
        ),
        "license_verdict": audit.verdict,
        "validation_verdict": data.verdict,
        "train_run_id": trained.run_id,
        "config_artifact": f"runs:/{trained.run_id}/config/resolved.yaml",
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
        **({"retrain.cause": cause} if cause else {}),
        **{k: v for k, v in tags.items() if k != "resolved_config"},
    }
    registration = refreshed(register_model, force)(
        outcome, trained.adapter_artifact, cfg.registry, version_tags, home
    )
    served = refreshed(build_serving_form, force)(
        registration, outcome, trained.adapter_artifact, data, cfg.eval, cfg.gates,
        cfg.train.max_length, home, early_export(export),
    )  # fmt: skip
    promotion = promote_stage(
        registration, key("decision", outcome.decision), cfg.canary, home, force
    )
    return {
        "experiment": cfg.name,
        "model": f"{model.repo_id}@{model.revision}",
        "dataset_sha256": data.fingerprint,
        "run_id": trained.run_id,
        "evaluation_record": outcome.record_run_id,
        "training": f"{trained.steps} steps"
        + (f", resumed from step {trained.resumed_from_step}" if trained.resumed_from_step else ""),
        "metrics": {
            k: round(v, 4)
            for k, v in outcome.metrics.items()
            if k in ("accuracy", "macro_f1", "exact_match", "rouge_l", "format_valid")
        },
        **_base_figures(outcome),
        "gates": gate_lines(outcome.decision),
        "registered": f"{registration.name} v{registration.version}",
        "promotion": f"{promotion.action}: {promotion.reason}",
        "serving form": served.chosen,
        "train_peak_rss_mb": round(trained.peak_rss_mb),
        "compute_s": compute_seconds(
            trained, outcome, served, started, base.result(raise_on_failure=False)
        ),
    }


def early_export(export) -> str | None:
    """The folder of the export made while the registration ran; None without one (the
    serving-form stage then exports itself)."""
    folder = export.result(raise_on_failure=False) if export is not None else None
    return folder if isinstance(folder, str) else None


def compute_seconds(trained, outcome, served, since: float, base=None) -> dict[str, float]:
    """Compute of this run's stages (0 when cached): the CLI subtracts it from the wall time
    to show the pipeline's own overhead. ``base``: the base model scored while training ran
    (off the critical path: shown beside the split, not in it)."""
    return {
        "training": fresh(trained.runtime_s, trained.finished_at, since),
        "evaluation": fresh(outcome.compute_s, outcome.finished_at, since)
        + fresh(served.compute_s, served.finished_at, since),
        "base_during_training": getattr(base, "compute_s", 0.0),  # 0: cached, skipped, failed
    }
