"""``loraflow status`` / ``models`` / ``lineage`` / ``ui``: what the stores hold, read only."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flows.cli.output import console
from tasks.core.errors import BadInput
from tasks.core.home import Home, apply_env


def print_ui_help(home: Home, flow_run_id: str | None = None) -> None:
    """Where to look: the running servers' pages, or how to start the UIs on this state."""
    from tasks.core.ops.links import ui_links

    links = ui_links(home)
    lines = ["", "Inspect this state:"]
    if links.prefect:
        page = links.flow_run(flow_run_id) if flow_run_id else links.prefect
        lines.append(f"  Prefect UI: {page}")
    else:
        lines.append(
            f"  Prefect UI: PREFECT_HOME={home.prefect_home} prefect server start"
            "  -> http://127.0.0.1:4200" + (f"/runs/flow-run/{flow_run_id}" if flow_run_id else "")
        )
    if links.mlflow:
        lines.append(f"  MLflow UI:  {links.mlflow}")
    else:
        lines.append(
            f"  MLflow UI:  mlflow ui --backend-store-uri {home.tracking_uri} --port 5000"
            "  -> http://127.0.0.1:5000"
        )
    if links.from_stack:
        lines.append("  (the stack started by `loraflow up` on this home)")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def ui() -> None:
    """Print how to open the Prefect and MLflow UIs on the embedded state."""
    print_ui_help(apply_env())


def status(
    limit: Annotated[int, typer.Option(help="How many recent flow runs to show.")] = 5,
) -> None:
    """Recent flow runs with their task states (Prefect), registered models and live canaries.

    Runs whose process died are marked Crashed / KILLED first (``reconcile``).
    """
    home = apply_env()
    from flows.cli.prefect_api import connect

    api = connect(home)  # the running server, else a temporary one, starting now
    # Imported while a temporary server starts (seconds), not after.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    import tasks.core.ops.reconcile  # noqa: F401 (the reconciler's MLflow side)
    from flows.cli.reconcile import reconcile
    from tasks.core.tracking import client

    api.ready()
    for line in reconcile(home):
        console.print(f"reconciled: {line}", highlight=False, soft_wrap=True)
    with get_client(sync_client=True) as prefect:
        for run in prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit):
            tasks = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=100,
            )
            states = ", ".join(f"{t.name.split(' ', 1)[0]}={t.state_name}" for t in tasks)
            console.print(
                f"flow run {run.name}: {run.state_name}, {len(tasks)} task runs ({states})",
                highlight=False,
                soft_wrap=True,
            )
    from flows.cli.stack import scheduler_report

    for line in scheduler_report(home):  # only while a stack from `loraflow up` runs
        console.print(line, highlight=False, soft_wrap=True)
    if home.mlflow_db.exists() or not home.tracking_uri.startswith("sqlite"):
        for model in client(home.tracking_uri).search_registered_models():
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items()))
            console.print(
                f"model {model.name}: latest v{max(int(v.version) for v in model.latest_versions)}"
                f", aliases {aliases or '(none)'}",
                highlight=False,
            )
            line = canary_line(model)
            if line:
                console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print(f"prefect: {api.describe()}", highlight=False, soft_wrap=True)


def canary_line(model) -> str:
    """The canary of a registered model as its lease says: active, expired or ended."""
    import time

    from tasks.core.promotion.lease import LEASE_TAG, LEGACY_WEIGHT_TAG, decode, routing

    tags = model.tags or {}
    lease = decode(tags.get(LEASE_TAG))
    if lease is None:
        legacy = tags.get(LEGACY_WEIGHT_TAG)
        return (
            f"canary: a bare {legacy} % weight left by an older loraflow (not obeyed)"
            if legacy
            else ""
        )
    now = routing(lease, time.time(), 0.0)
    what = f"canary of v{lease.version} (step {lease.step}, run {lease.holder[:12]})"
    if now.state == "active":
        return f"{what}: ACTIVE at {lease.percent:g} %, lease expires in {now.seconds_left:.0f} s"
    if now.state == "expired":
        return (
            f"{what}: EXPIRED {-now.seconds_left:.0f} s ago, 0 % to the challenger; "
            f"`loraflow rollback {model.name}` records and clears it"
        )
    return f"{what}: ended, 0 % to the challenger ({lease.ended})"


def registry_client():
    """The home's MLflow client, or exit 2 when nothing was ever recorded there."""
    home = apply_env()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr clean
    if home.tracking_uri.startswith("sqlite") and not home.mlflow_db.exists():
        raise BadInput(f"{home.mlflow_db}: no MLflow state yet; run a pipeline first")
    from tasks.core.tracking import client

    return client(home.tracking_uri)


def models_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
) -> None:
    """Versions of a registered model: aliases, gate figures, promotion; refused candidates."""
    mlc = registry_client()
    from flows.cli.registry_views import models_table, refused_table
    from tasks.core.registry.lineage import versions

    rows, refused = versions(mlc, name)
    console.print(models_table(name, rows, console.width))
    if refused:
        console.print(refused_table(refused))


def lineage_command(
    ref: Annotated[
        str, typer.Argument(help="NAME@ALIAS (e.g. my-model@champion) or NAME@VERSION.")
    ],
    config: Annotated[
        bool, typer.Option("--config/--no-config", help="Print the resolved config too.")
    ] = True,
) -> None:
    """The full chain behind a version, from MLflow alone: model, data, config, verdicts, gates."""
    mlc = registry_client()
    from flows.cli.registry_views import lineage_view
    from tasks.core.registry.lineage import collect

    console.print(lineage_view(collect(mlc, ref), show_config=config))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(ui)
    app.command("models")(models_command)
    app.command("lineage")(lineage_command)
