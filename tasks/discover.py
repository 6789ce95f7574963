"""Stage 1 - discover: rank models of the local mirror (or check the pinned one)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import key, stage_options
from tasks.core.config import DiscoverySpec
from tasks.core.discovery import Candidate, discover


def mirror_state(cache_dir: Path) -> list[str]:
    """What refs/main points at for every cached model: changes when the mirror changes."""
    return sorted(
        f"{ref.parent.parent.name}={ref.read_text().strip()}"
        for ref in Path(cache_dir).glob("models--*/refs/main")
    )


def _cache_key(context, params) -> str:
    return key(
        "discover", params["spec"], str(params["cache_dir"]), mirror_state(params["cache_dir"])
    )


@task(
    name="discover",
    task_run_name="discover {spec.task}",
    timeout_seconds=300,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def discover_models(spec: DiscoverySpec, cache_dir: str) -> list[Candidate]:
    candidates = discover(spec, Path(cache_dir))
    create_table_artifact(
        key="discovery",
        table=[
            {
                "rank": i + 1,
                "model": c.repo_id,
                "revision": c.revision[:12],
                "type": c.model_type,
                "parameters": c.parameters,
                "license": c.license,
                "score": c.score,
                "reasons": "; ".join(c.reasons),
            }
            for i, c in enumerate(candidates)
        ],
        description=f"Candidates for {spec.task}, best first, each pinned to a commit sha.",
    )
    return candidates
