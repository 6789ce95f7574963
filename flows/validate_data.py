"""The ``validate-data`` flow: only the data stage, with the model resolved as ``finetune`` does.

The token-length check needs the tokenizer of the model that would be trained, so the flow runs
discovery and the license audit first (both cached), then validation. Nothing is trained or
registered.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from tasks.audit import audit_licenses
from tasks.common import refreshed
from tasks.core.audit.licenses import dataset_licenses
from tasks.core.config.loader import LoadedConfig, lineage, load_config
from tasks.core.data.report import DataReport
from tasks.core.home import Home
from tasks.core.ops.processes import register_process
from tasks.discover import discover_models
from tasks.validate import validate_data


def audited_model_and_data(loaded: LoadedConfig, home: Home, tags: dict, force: bool):
    """Discover -> audit -> validate: (model, audit record, data report), as both flows run it."""
    cfg = loaded.config
    discovery = refreshed(discover_models, force)(cfg.discovery, str(home.hf_hub_cache))
    model, audit = refreshed(audit_licenses, force)(
        discovery,
        cfg.license,
        loaded.license_policy,
        loaded.license_policy_sha256,
        dataset_licenses(cfg.data),
        cfg.registry.experiment,
        home,
        {**tags, "loraflow.experiment": cfg.name},
    )
    data = refreshed(validate_data, force)(
        cfg.data,
        str(home.work_dir / "prepared"),
        model,
        cfg.train.max_length,
        str(home.hf_hub_cache),
    )
    return model, audit, data


@flow(name="validate-data")
def validate_data_only(config_path: str, force: bool = False) -> DataReport:
    """Discover -> audit -> validate; raises DataValidationFailed (with the report) on failure."""
    loaded = load_config(config_path)
    home = Home.from_env().ensure()
    register_process(home, "validate-data", str(flow_run.get_id() or ""))
    return audited_model_and_data(loaded, home, lineage(loaded), force)[2]
