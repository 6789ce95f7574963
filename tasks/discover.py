"""Stage 1 - discover: rank the catalog's models (mirror or Hub), or check the pinned one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import log_decision, stage_options
from tasks.core.catalog.choose import catalog_for
from tasks.core.catalog.mirror import mirror_state
from tasks.core.config.audit import DiscoverySpec
from tasks.core.digests import key
from tasks.core.discovery import Discovery, discover


def _cache_key(context, params) -> str:
    catalog = catalog_for(Path(params["cache_dir"]))
    # The mirror changes only by import; the Hub changes all the time: reuse a search for a day.
    state = (
        mirror_state(params["cache_dir"])
        if catalog.source == "mirror"
        else f"hub-{datetime.now(UTC):%Y-%m-%d}"
    )
    return key("discover", params["spec"], str(params["cache_dir"]), catalog.source, state)


@task(
    name="discover",
    task_run_name="discover {spec.task}",
    timeout_seconds=300,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def discover_models(spec: DiscoverySpec, cache_dir: str) -> Discovery:
    discovery = discover(spec, catalog_for(Path(cache_dir)))
    best = discovery.candidates[0]
    if discovery.pinned:
        log_decision("discover", f"pinned model {best.repo_id}@{best.revision[:12]} fits")
    else:
        log_decision(
            "discover",
            f"{len(discovery.candidates)} candidates from the {discovery.source}, best "
            f"{best.repo_id}@{best.revision[:12]} (score {best.score:.2f}); "
            f"{len(discovery.rejected)} rejected"
            + "".join(f"\n{r.repo_id}: {'; '.join(r.reasons)}" for r in discovery.rejected),
        )
    create_table_artifact(
        key="discovery",
        table=[{**row, "revision": row["revision"][:12]} for row in discovery.table()],
        description=(
            f"Candidates for {spec.task} from the {discovery.source}, best first, each pinned to a "
            "commit sha" + (" (pinned by config)." if discovery.pinned else "; rejected ones last.")
        ),
    )
    return discovery
