"""``loraflow serve``, ``loraflow promote`` and ``loraflow rollback``: the serving side of the
CLI, registered on the main app by ``flows/cli/app.py``.

As there, the state home's environment is applied before Prefect or MLflow is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console
from tasks.core.errors import BadInput, RollbackImpossible
from tasks.core.home import CANARY_POLICY, MONITORING_POLICY, apply_env


def _policy(path: Path):
    from tasks.core.config.loader import load_canary_policy

    return load_canary_policy(path)


def serve_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    host: Annotated[
        str,
        typer.Option(
            help="Interface to bind; loopback by default. Another one needs "
            "LORAFLOW_FEEDBACK_TOKEN (from the environment, never an option)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    policy: Annotated[
        Path, typer.Option(help="Canary policy YAML whose `serving` section applies.")
    ] = CANARY_POLICY,
    challenger_percent: Annotated[
        float | None,
        typer.Option(help="Challenger share while no canary sets one (default: the policy's)."),
    ] = None,
    monitoring_policy: Annotated[
        Path, typer.Option(help="Monitoring policy YAML whose `live` section applies.")
    ] = MONITORING_POLICY,
) -> None:
    """Serve NAME@champion and NAME@challenger over HTTP (FastAPI + uvicorn), in the foreground."""
    home = apply_env()
    spec = _policy(policy).serving
    from tasks.core.config.loader import load_monitoring_policy

    live = load_monitoring_policy(monitoring_policy).live
    if challenger_percent is not None:
        if not 0 <= challenger_percent <= 100:
            raise BadInput(f"--challenger-percent {challenger_percent}: use 0..100")
        spec = spec.model_copy(update={"challenger_percent": challenger_percent})
    from tasks.core.security.tokens import FEEDBACK_ENV, ServiceTokens
    from tasks.core.serving.runner import bind, build_service, serve_foreground

    tokens = ServiceTokens.from_env()
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not tokens.feedback:
        raise BadInput(
            f"--host {host} without {FEEDBACK_ENV}: anyone on the network could post /feedback "
            "labels; set it (loraflow secrets init makes one) or bind 127.0.0.1"
        )
    sock = bind(host, port)  # a taken port fails here, in one line, before any model loads
    console.print(
        f"serving {name}@champion (+ challenger) from {home.tracking_uri} on http://{host}:{port}"
        "  (POST /predict, /feedback; GET /healthz, /readyz, /metrics, /monitoring/window)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"auth: {tokens.describe()}", highlight=False, soft_wrap=True)
    serve_foreground(build_service(name, spec, home.tracking_uri, live=live), sock)


def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the challenger alias).")
    ] = None,
    policy: Annotated[Path, typer.Option(help="Canary policy YAML.")] = CANARY_POLICY,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Examples to replay: a prepared dataset folder or JSONL of text/label "
            "(default: the version's own eval split)."
        ),
    ] = None,
    service_url: Annotated[
        str | None,
        typer.Option(help="A running `loraflow serve` to canary on (default: start one)."),
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            help="Prometheus holding the SLO recordings: the error budget over its whole period "
            "(default: the service's counters)."
        ),
    ] = None,
) -> None:
    """Run the promotion flow: canary the challenger against the champion; exit 3 on rollback."""
    home = apply_env()
    _policy(policy)  # fail fast, before Prefect starts
    from flows.cli.prefect_api import connect

    api = connect(home)  # the running server, else a temporary one, starting now
    from flows.cli.output import tame_prefect_console
    from flows.cli.pipeline import result_or_pointer
    from flows.cli.reconcile import reconcile
    from flows.promote import promotion
    from tasks.core.registry.history import actor_cli

    api.ready()
    tame_prefect_console()
    for line in reconcile(home):  # an earlier canary killed mid-step ends here, recorded
        console.print(f"reconciled: {line}", highlight=False, soft_wrap=True)
    with api.flow_settings():
        state = promotion(
            model_name=name,
            version=version,
            policy_path=str(policy.resolve()),
            replay_path=str(data.resolve()) if data else None,
            service_url=service_url,
            actor=actor_cli(),
            prometheus_url=prometheus_url,
            return_state=True,
        )
    decision = result_or_pointer(state, home)  # a rollback: one line, exit 3, no traceback
    console.print(f"{decision.action}: {decision.reason}", highlight=False, soft_wrap=True)


def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[
        str, typer.Option(help="Why, recorded in the decision history.")
    ] = "rolled back by hand",
) -> None:
    """Undo the last thing: end a live canary (0 % to the challenger), else restore the
    previous champion. Either is recorded with your name and reason."""
    home = apply_env()
    from mlflow.exceptions import MlflowException

    from tasks.core.promotion.rollback import abort_live_canary, rollback_champion
    from tasks.core.registry.history import actor_cli
    from tasks.core.tracking import client

    mlc = client(home.tracking_uri)
    try:
        aborted = abort_live_canary(mlc, name, reason, actor_cli())
        if aborted is not None:
            console.print(f"{name}: canary of v{aborted} ended, 0 % to it ({reason})")
            return
        restored, demoted = rollback_champion(mlc, name, reason, actor_cli())
    except MlflowException as exc:  # no such registered model
        raise RollbackImpossible(exc.message) from None
    console.print(
        f"{name}: champion restored to v{restored}" + (f" (was v{demoted})" if demoted else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``promote`` and ``rollback`` to the ``loraflow`` app."""
    app.command("serve")(serve_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
