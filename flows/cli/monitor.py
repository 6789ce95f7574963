"""``loraflow monitor NAME``: one run of the monitor flow against a running service.

Prints each finding (figure, threshold, verdict) and the events emitted. A breach is reported,
not an error: the exit status is 0 whenever the monitor ran; bad input is 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console
from tasks.core.home import MONITORING_POLICY, apply_env


def monitor_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    service_url: Annotated[
        str, typer.Option(help="The running `loraflow serve` whose live window is judged.")
    ] = "http://127.0.0.1:8080",
    version: Annotated[
        str | None, typer.Option(help="Version to judge (default: the champion).")
    ] = None,
    policy: Annotated[Path, typer.Option(help="Monitoring policy YAML.")] = MONITORING_POLICY,
) -> None:
    """Compare NAME's live traffic with its reference profile; record; emit on a breach."""
    home = apply_env()
    from tasks.core.config.loader import load_monitoring_policy

    load_monitoring_policy(policy)  # fail fast, before Prefect starts
    from flows.cli.output import tame_prefect_console
    from flows.cli.pipeline import result_or_pointer
    from flows.monitor import monitor_flow
    from tasks.core.registry.history import actor_cli

    tame_prefect_console()
    state = monitor_flow(
        model_name=name,
        service_url=service_url,
        version=version,
        policy_path=str(policy.resolve()),
        actor=actor_cli(),
        return_state=True,
    )
    result = result_or_pointer(state, home)
    for line in result["findings"]:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    events = ", ".join(result["events"]) or "none"
    console.print(
        f"{name} v{result['version']}: {result['outcome']}; events emitted: {events}; "
        f"record {result['record']}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
