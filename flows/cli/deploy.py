"""``loraflow deploy`` / ``emit-event``: deployments of the finetune flow, and their events.

``deploy`` registers the finetune flow per experiment with the config's schedule and event
triggers, so retraining runs on a cadence or when data lands, through a worker. Both find the
Prefect server by themselves (``PREFECT_API_URL``, else the stack ``loraflow up`` runs on this
home, whose secrets file also gives the API's auth string).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console
from flows.cli.stack import ensure_pools, use_stack_credentials
from tasks.core.errors import BadInput
from tasks.core.home import REPO_ROOT, Home, apply_env
from tasks.core.ops import stack


def _api(home: Home) -> str:
    api = stack.api_url(home)
    if not api:
        raise BadInput("no Prefect server: start one with `loraflow up` or set PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api  # for anything importing Prefect after this point
    if api == stack.api_url(home, {}):  # the stack on this home: its auth string, if any
        use_stack_credentials(home)
    return api


def deploy(
    configs: Annotated[list[Path], typer.Argument(help="Experiment YAML files to deploy.")],
) -> None:
    """Register the finetune flow per experiment: cron schedule, work pool, event triggers."""
    from tasks.core.config.loader import load_config

    home = apply_env()
    api = _api(home)
    plans = [stack.deployment_plan(load_config(p).config, p, REPO_ROOT) for p in configs]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ensure_pools(api)
    ui = stack.StackUrls(api.removesuffix("/api"), None)
    with temporary_settings({PREFECT_API_URL: api}):
        for plan in plans:
            deployment_id = _apply(plan)
            cadence = f"cron '{plan.cron}' ({plan.timezone})" if plan.cron else "no schedule"
            state = "" if plan.active or not plan.cron else ", paused"
            events = ", ".join(t.event for t in plan.triggers) or "none"
            console.print(
                f"deployed {plan.full_name}: {cadence}{state}, pool {plan.work_pool}, "
                f"triggers on {events}\n  {ui.deployment(str(deployment_id))}\n"
                f"  run now: prefect deployment run '{plan.full_name}'",
                highlight=False,
                soft_wrap=True,
            )


def _apply(plan: stack.DeploymentPlan):
    from prefect import flow
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    source = flow.from_source(source=str(REPO_ROOT), entrypoint=stack.ENTRYPOINT)
    triggers = [
        DeploymentEventTrigger(
            name=t.name,
            expect={t.event},
            match={"prefect.resource.id": t.resource_id},
            parameters=plan.parameters(force=t.force),
        )
        for t in plan.triggers
    ]
    schedules = [Cron(plan.cron, timezone=plan.timezone, active=plan.active)] if plan.cron else []
    return source.deploy(
        name=plan.name,
        work_pool_name=plan.work_pool,
        schedules=schedules,
        triggers=triggers,
        parameters=plan.parameters(),
        description=plan.description,
        tags=list(plan.tags),
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )


def emit_event(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(stack.EVENTS)}.")],
    config: Annotated[Path, typer.Argument(help="Experiment YAML naming the dataset / model.")],
    note: Annotated[str, typer.Option(help="Free text carried in the event payload.")] = "",
) -> None:
    """Emit a loraflow event (new data, drift, staleness) that deployment triggers act on."""
    from tasks.core.config.loader import load_config

    if kind not in stack.EVENTS:
        raise BadInput(f"unknown event {kind!r}; allowed: {', '.join(stack.EVENTS)}")
    home = apply_env()
    cfg = load_config(config).config
    api = _api(home)
    resource = (
        stack.dataset_resource(cfg.data.name)
        if kind == "data.updated"
        else stack.model_resource(cfg.registry.model_name)
    )
    event_id = _emit(api, stack.EVENTS[kind], resource, {"experiment": cfg.name, "note": note})
    console.print(f"emitted {stack.EVENTS[kind]} on {resource} (id {event_id})", highlight=False)


def _emit(api: str, event: str, resource_id: str, payload: dict) -> str:
    import asyncio

    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    message = Event(event=event, resource={"prefect.resource.id": resource_id}, payload=payload)

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(message)

    with temporary_settings({PREFECT_API_URL: api}):
        asyncio.run(send())
    return str(message.id)


def register(app: typer.Typer) -> None:
    """Add ``deploy`` and ``emit-event`` to the ``loraflow`` CLI."""
    app.command()(deploy)
    app.command("emit-event")(emit_event)
