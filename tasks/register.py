"""Stage 6 - register: the PEFT model as a new version (once per run) with alias ``challenger``."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import key, stage_options
from tasks.core.config import RegistrySpec
from tasks.core.gates import to_markdown
from tasks.core.home import Home
from tasks.core.registry import Registration, register
from tasks.core.tracking import client
from tasks.gate import EvalOutcome, fetch_adapter


def _cache_key(context, params) -> str:
    outcome: EvalOutcome = params["outcome"]
    # The code's commit is recorded, not keyed: a new commit alone must not re-register a run.
    tags = {k: v for k, v in params["tags"].items() if k != "git_commit"}
    return key(
        "register",
        outcome.run_id,
        outcome.decision,
        params["registry"],
        tags,
        params["home"].tracking_uri,
    )


@task(
    name="register",
    task_run_name="register {registry.model_name}",
    timeout_seconds=600,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def register_model(
    outcome: EvalOutcome,
    adapter_artifact: str,
    registry: RegistrySpec,
    tags: dict[str, str],
    home: Home,
) -> Registration:
    mlc = client(home.tracking_uri)
    adapter = fetch_adapter(home, outcome.run_id, adapter_artifact)
    version_tags = {
        **tags,
        "gate_decision": outcome.decision.label,
        **{
            f"metric.{k}": f"{v:.4f}"
            for k, v in outcome.metrics.items()
            if k in ("accuracy", "macro_f1")
        },
    }
    description = (
        f"LoRA adapter on {tags.get('base_repo_id')}@{tags.get('base_revision', '')[:12]}, "
        f"data sha256 {tags.get('dataset_sha256', '')[:12]}.\n\n{to_markdown(outcome.decision)}"
    )
    reg = register(mlc, registry.model_name, outcome.run_id, adapter, version_tags, description)
    if not reg.created:  # a re-run after a gate change: the version records the latest decision
        for tag, value in version_tags.items():
            mlc.set_model_version_tag(reg.name, reg.version, tag, value)
    create_markdown_artifact(
        key="registration",
        markdown=(
            f"## Registered `{reg.name}` version {reg.version}\n\n"
            f"{'new version' if reg.created else 'existing version for this run (idempotent)'}; "
            f"alias `challenger` -> v{reg.version}; MLflow run `{reg.run_id}`."
        ),
        description="Model registry",
    )
    return reg
