"""Stage 3 - data validation: load, map, check, fingerprint; stop before training on failure."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import file_sha256, key, stage_options
from tasks.core.config import DataSpec
from tasks.core.data import DataError, DataReport, failure_message, prepare


def _cache_key(context, params) -> str:
    spec: DataSpec = params["spec"]
    files = [file_sha256(spec.train.path), file_sha256(spec.eval.path)]
    return key("validate", spec, files, params["out_root"])


@task(
    name="validate-data",
    task_run_name="validate {spec.name}",
    timeout_seconds=900,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def validate_data(spec: DataSpec, out_root: str) -> DataReport:
    report = prepare(spec, out_root)
    create_table_artifact(
        key="data-validation",
        table=[
            {
                "check": c.check,
                "split": c.split,
                "figure": c.figure,
                "threshold": c.threshold,
                "verdict": c.verdict,
                "examples": ", ".join(map(str, c.examples)),
                "detail": c.detail,
            }
            for c in report.checks
        ],
        description=f"{spec.name}: {report.verdict}; rows {report.rows}; sha256 {report.fingerprint[:16]}",
    )
    if report.failed:
        raise DataError(failure_message(report))
    return report
