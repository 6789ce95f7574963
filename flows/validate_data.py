"""The ``validate-data`` flow: only the data stage, with the model resolved as ``finetune`` does.

The token-length check needs the tokenizer of the model that would be trained, so the flow runs
discovery and the license audit first (both cached), then validation. Nothing is trained or
registered.
"""

from __future__ import annotations

from prefect import flow

from tasks.audit import audit_licenses
from tasks.core.audit.licenses import dataset_licenses
from tasks.core.config.loader import lineage, load_config
from tasks.core.data.report import DataReport
from tasks.core.home import Home
from tasks.discover import discover_models
from tasks.validate import validate_data


@flow(name="validate-data")
def validate_data_only(config_path: str, force: bool = False) -> DataReport:
    """Discover -> audit -> validate; raises DataValidationFailed (with the report) on failure."""
    loaded = load_config(config_path)
    cfg, home = loaded.config, Home.from_env().ensure()
    tags = lineage(loaded)

    def stage(task):
        return task.with_options(refresh_cache=True) if force else task

    discovery = stage(discover_models)(cfg.discovery, str(home.hf_hub_cache))
    model, _ = stage(audit_licenses)(
        discovery,
        cfg.license,
        loaded.license_policy,
        loaded.license_policy_sha256,
        dataset_licenses(cfg.data),
        cfg.registry.experiment,
        home,
        {**tags, "loraflow.experiment": cfg.name},
    )
    return stage(validate_data)(
        cfg.data,
        str(home.work_dir / "prepared"),
        model,
        cfg.train.max_length,
        str(home.hf_hub_cache),
    )
