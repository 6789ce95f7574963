"""``loraflow serve``, ``loraflow promote`` and ``loraflow rollback``: the serving side of the
CLI, registered on the main app by ``flows/cli.py``.

As there, the state home's environment is applied before Prefect or MLflow is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from tasks.core.errors import EXIT_BAD_INPUT, Refusal
from tasks.core.home import apply_env

SHIPPED_CANARY_POLICY = Path(__file__).resolve().parent.parent / "configs/policies/canary.yaml"
console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


def _policy(path: Path):
    from tasks.core.config_loader import ConfigError, load_canary_policy

    try:
        return load_canary_policy(path)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None


def serve_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback by default (no authentication).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    policy: Annotated[
        Path, typer.Option(help="Canary policy YAML whose `serving` section applies.")
    ] = SHIPPED_CANARY_POLICY,
    challenger_percent: Annotated[
        float | None,
        typer.Option(help="Challenger share while no canary sets one (default: the policy's)."),
    ] = None,
) -> None:
    """Serve NAME@champion and NAME@challenger over HTTP (FastAPI + uvicorn), in the foreground."""
    home = apply_env()
    spec = _policy(policy).serving
    if challenger_percent is not None:
        if not 0 <= challenger_percent <= 100:
            raise _fail(f"--challenger-percent {challenger_percent}: use 0..100", EXIT_BAD_INPUT)
        spec = spec.model_copy(update={"challenger_percent": challenger_percent})
    from tasks.core.serving.runner import build_service, serve_foreground

    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: binding {host}: the service has no authentication", highlight=False)
    console.print(
        f"serving {name}@champion (+ challenger) from {home.tracking_uri} on http://{host}:{port}"
        "  (POST /predict, /feedback; GET /healthz, /readyz, /metrics)",
        highlight=False,
        soft_wrap=True,
    )
    serve_foreground(build_service(name, spec, home.tracking_uri), host, port)


def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the challenger alias).")
    ] = None,
    policy: Annotated[Path, typer.Option(help="Canary policy YAML.")] = SHIPPED_CANARY_POLICY,
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
) -> None:
    """Run the promotion flow: canary the challenger against the champion; exit 3 on rollback."""
    apply_env()
    _policy(policy)  # fail fast, before Prefect starts
    from flows.promote import promotion
    from tasks.common import DETERMINISTIC
    from tasks.promote import NothingToPromote

    try:
        decision = promotion(
            model_name=name,
            version=version,
            policy_path=str(policy.resolve()),
            replay_path=str(data.resolve()) if data else None,
            service_url=service_url,
        )
    except NothingToPromote as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except DETERMINISTIC as exc:
        code = exc.exit_code if isinstance(exc, Refusal) else EXIT_BAD_INPUT
        raise _fail(str(exc), code) from None
    console.print(f"{decision.action}: {decision.reason}", highlight=False, soft_wrap=True)


def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[
        str, typer.Option(help="Why, recorded on the demoted version.")
    ] = "rolled back by hand",
) -> None:
    """Restore the previous-champion alias as champion (undo the last canary promotion)."""
    from datetime import UTC, datetime

    home = apply_env()
    from mlflow.exceptions import MlflowException

    from tasks.core.canary_registry import RollbackImpossible, manual_rollback
    from tasks.core.tracking import client

    when = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        restored, demoted = manual_rollback(client(home.tracking_uri), name, reason, when)
    except (RollbackImpossible, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise _fail(message, EXIT_BAD_INPUT) from None
    console.print(
        f"{name}: champion restored to v{restored}" + (f" (was v{demoted})" if demoted else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``promote`` and ``rollback`` to the ``loraflow`` app."""
    app.command("serve")(serve_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
