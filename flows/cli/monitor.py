"""``loraflow monitor NAME``: one run of the monitor flow against a running service.

Prints each finding (figure, threshold, verdict) and the events emitted. A breach is reported,
not an error: the exit status is 0 whenever the monitor ran; bad input is 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console
from tasks.core.home import MONITORING_POLICY, REPO_ROOT, SLO_POLICY, apply_env

SLO_RULES = REPO_ROOT / "infra/prometheus/rules/loraflow-slo.yaml"


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
    from flows.cli.prefect_api import connect

    # The running stack's server when there is one: its automation is what turns a breach
    # event into a retraining run (a server of this command's own would drop it).
    api = connect(home)
    from flows.cli.output import tame_prefect_console
    from flows.cli.pipeline import result_or_pointer
    from flows.monitor import monitor_flow
    from tasks.core.registry.history import actor_cli

    api.ready()
    tame_prefect_console()
    with api.flow_settings():
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
    from tasks.core.ops.stack import EVENTS

    events = ", ".join(
        f"{EVENTS[e]} (id {i})" for e, i in zip(result["events"], result["event_ids"], strict=False)
    )
    console.print(
        f"{name} v{result['version']}: {result['outcome']}; events emitted: {events or 'none'}; "
        f"record {result['record']}",
        highlight=False,
        soft_wrap=True,
    )


def slo_rules_command(
    slo: Annotated[Path, typer.Option(help="SLO file.")] = SLO_POLICY,
    out: Annotated[Path, typer.Option(help="Rule file to write.")] = SLO_RULES,
) -> None:
    """Render the SLO file into Prometheus recording and burn-rate alert rules."""
    from tasks.core.config.loader import load_slo_policy
    from tasks.core.monitoring.slo import render_yaml

    text = render_yaml(load_slo_policy(slo))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)  # nothing half-written
    console.print(
        f"wrote {out} from {slo}; check with `promtool check rules {out}`", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
    app.command("slo-rules")(slo_rules_command)
