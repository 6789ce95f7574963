"""The check-only path of ``loraflow validate-data``: discover -> audit -> validate, no Prefect.

A check answers in seconds, so it does not start a temporary Prefect server (several seconds
alone, far more on a busy machine) just to run three functions. The same core functions run
as in the ``validate-data`` flow (``flows/validate_data.py``), in the same order, on the same
config; the difference is what a run leaves behind: no Prefect flow run, no cached task
results and no MLflow refusal run (a denied license is reported, not recorded). With a
running server (``loraflow up``) the CLI runs the flow instead, so the run shows in the UI.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.audit.licenses import audit, dataset_licenses
from tasks.core.audit.supply_chain import gather_facts
from tasks.core.catalog.choose import catalog_for, catalog_named
from tasks.core.config.loader import LoadedConfig
from tasks.core.data.prepare import prepare
from tasks.core.data.report import DataReport, failure_message
from tasks.core.discovery import discover
from tasks.core.errors import DataValidationFailed, LicenseDenied
from tasks.core.home import Home
from tasks.core.training.refs import ModelRef


def audited_candidate(loaded: LoadedConfig, home: Home):
    """The first discovered candidate the license policy allows; LicenseDenied otherwise."""
    cfg = loaded.config
    discovery = discover(cfg.discovery, catalog_for(home.hf_hub_cache))
    catalog = catalog_named(discovery.source, Path(home.hf_hub_cache))
    denials: list[str] = []
    for candidate in discovery.candidates:
        record = audit(
            candidate,
            gather_facts(catalog, candidate),
            dataset_licenses(cfg.data),
            loaded.license_policy,
            loaded.license_policy_sha256,
            cfg.license.approvals,
        )
        if record.verdict == "allow":
            return candidate
        denials += record.denials
    raise LicenseDenied(f"license audit denied the run: {'; '.join(denials)}")


def validate_data_directly(loaded: LoadedConfig, home: Home) -> DataReport:
    """The data report of ``loaded``'s data with its audited model's tokenizer (as the flow
    validates it); raises DataValidationFailed (with the report) when a check fails."""
    cfg = loaded.config
    model = audited_candidate(loaded, home)
    from tasks.core.training.tokenizer import load_tokenizer

    ref = ModelRef(model.repo_id, model.revision)
    tokenizer = load_tokenizer(ref, cache_dir=home.hf_hub_cache)
    report = prepare(
        cfg.data, str(home.work_dir / "prepared"), tokenizer, cfg.train.max_length, str(ref)
    )
    if report.failed:
        raise DataValidationFailed(failure_message(report), report)
    return report
