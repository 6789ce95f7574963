"""Stage 3 - data validation: load, map, check, fingerprint; stop before training on failure."""

from __future__ import annotations

from logging import INFO, WARNING
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import log_decision, stage_options
from tasks.core.config.data import DataSpec
from tasks.core.data.loading import source_digest
from tasks.core.data.prepare import prepare
from tasks.core.data.report import DataReport, failure_message
from tasks.core.digests import key
from tasks.core.errors import DataValidationFailed


def _model_ref(model) -> str:
    return f"{model.repo_id}@{model.revision}" if model is not None else ""


def _cache_key(context, params) -> str:
    spec: DataSpec = params["spec"]
    return key(
        "validate",
        spec,
        [source_digest(source) for source in spec.splits.values()],
        params["out_root"],
        _model_ref(params.get("model")),
        params.get("max_length"),
    )


@task(
    name="validate-data",
    task_run_name="validate {spec.name}",
    timeout_seconds=900,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def validate_data(
    spec: DataSpec,
    out_root: str,
    model=None,
    max_length: int = 128,
    cache_dir: str | None = None,
) -> DataReport:
    """``model`` (repo_id + revision: the audited Candidate) supplies the tokenizer."""
    tokenizer = None
    if model is not None:
        from tasks.core.training.refs import ModelRef
        from tasks.core.training.tokenizer import load_tokenizer

        ref = ModelRef(model.repo_id, model.revision)
        tokenizer = load_tokenizer(ref, cache_dir=Path(cache_dir) if cache_dir else None)
    report = prepare(spec, out_root, tokenizer, max_length, _model_ref(model))
    create_table_artifact(
        key="data-validation",
        table=report.table_rows(),
        description=f"{spec.name}: {report.summary()}",
    )
    issues = "".join(f"\n{c.verdict} {c.line()}" for c in report.failed + report.warnings)
    level = WARNING if report.failed or report.warnings else INFO
    log_decision("validate", f"{report.summary()}{issues}", level)
    if report.failed:
        raise DataValidationFailed(failure_message(report), report)
    return report
