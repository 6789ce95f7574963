"""``loraflow secrets`` and ``loraflow access``: the secrets of a stack and who may do what.

``secrets init`` writes a fresh secrets file (mode 0600) for ``docker compose --env-file`` and
``loraflow up --secrets``; ``rotate`` replaces values in it; ``show`` lists them masked;
``client`` writes the environment of one service account (for ``kubectl create secret
--from-env-file``, or ``set -a; . FILE``). ``access provision`` creates the registry's roles
and service accounts on an MLflow server (the compose stack's one-shot ``mlflow-access``
service runs it; ``loraflow up --secrets`` does it itself); ``access add-user`` adds a person
with a role, the password read from stdin, never from the command line. No value is printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console, warning_line
from tasks.core.errors import BadInput
from tasks.core.home import Home
from tasks.core.security import accounts, envfile

secrets_app = typer.Typer(help="Make, rotate and inspect the stack's secrets file (mode 0600).")
access_app = typer.Typer(help="Roles and users of an authenticated MLflow registry.")


def _default_file() -> Path:
    return Home.from_env().root / "secrets.env"


FileArg = Annotated[
    Path | None,
    typer.Argument(help="Secrets file (default: $LORAFLOW_HOME/secrets.env; compose: infra/.env)."),
]


def _show(path: Path, values: dict[str, str], changed: set[str]) -> None:
    for name, value in values.items():
        mark = " (new)" if name in changed else ""
        console.print(f"  {name:<32} {envfile.masked(value)}{mark}", highlight=False)
    console.print(f"{path}: mode {oct(path.stat().st_mode & 0o777)}", highlight=False)


@secrets_app.command("init")
def init(
    file: FileArg = None,
    predict_token: Annotated[
        bool, typer.Option(help="Also make LORAFLOW_PREDICT_TOKEN: /predict then needs it.")
    ] = False,
) -> None:
    """Write a new secrets file with random values (refuses to overwrite one)."""
    path = envfile.write(file or _default_file(), envfile.generate(predict_token), replace=False)
    values = envfile.read(path)
    _show(path, values, set(values))
    console.print(
        f"next: loraflow up --secrets {path}   or   docker compose -f infra/compose.yaml "
        f"--env-file {path} up -d",
        highlight=False,
        soft_wrap=True,
    )


@secrets_app.command("rotate")
def rotate(
    names: Annotated[
        list[str] | None, typer.Argument(help="Secrets to renew (default: all).")
    ] = None,
    file: Annotated[Path | None, typer.Option(help="Secrets file.")] = None,
) -> None:
    """Replace values in the secrets file; restart the stack (and re-provision) to apply."""
    path = file or _default_file()
    values = envfile.read(path)
    new = envfile.rotate(values, list(names or ()))
    envfile.write(path, new, replace=True)
    _show(path, new, {k for k in new if new[k] != values.get(k)})
    console.print(
        "apply: restart the stack (loraflow down && loraflow up --secrets FILE, or docker compose "
        "up -d); MLflow service accounts take new passwords at provisioning, the Postgres and "
        "MinIO passwords only on a fresh volume or by hand (docs/operations.md)",
        highlight=False,
        soft_wrap=True,
    )


@secrets_app.command("show")
def show(file: FileArg = None) -> None:
    """List the secrets masked, and what is wrong with them (exit 2 if anything)."""
    path = file or _default_file()
    values = envfile.read(path)
    _show(path, values, set())
    if envfile.loose_permissions(path):
        warning_line(f"{path} is readable by group or others: chmod 600 {path}")
    found = envfile.problems(values)
    if found:
        raise BadInput("; ".join(found))


@secrets_app.command("client")
def client(
    account: Annotated[str, typer.Argument(help="worker, promoter or serve.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Env file to write (0600).")],
    file: Annotated[Path | None, typer.Option(help="Secrets file.")] = None,
    mlflow_url: Annotated[str, typer.Option(help="MLflow server URL to put in it.")] = "",
) -> None:
    """Write the client environment of a service account (never printed)."""
    if account not in accounts.BY_NAME:
        raise BadInput(f"unknown account {account!r}; one of {', '.join(accounts.BY_NAME)}")
    values = envfile.read(file or _default_file())
    env = accounts.client_env(accounts.BY_NAME[account], values, mlflow_url)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.writelines(f"{k}={v}\n" for k, v in env.items())
    console.print(f"wrote {output} ({', '.join(env)}), mode 0600", highlight=False)


def _admin(tracking_uri: str | None, file: Path | None):
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise BadInput(
            "needs an MLflow server: --tracking-uri http://HOST:PORT (or MLFLOW_TRACKING_URI)"
        )
    values = envfile.read(file) if file else dict(os.environ)
    password = values.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if not password:
        raise BadInput("MLFLOW_AUTH_ADMIN_PASSWORD is not set (environment or --secrets FILE)")
    return accounts.admin_client(uri, password), values


TrackingOpt = Annotated[
    str | None, typer.Option(help="MLflow server (default: MLFLOW_TRACKING_URI).")
]
SecretsOpt = Annotated[
    Path | None, typer.Option("--secrets", help="Secrets file (default: the environment).")
]


@access_app.command("provision")
def provision(tracking_uri: TrackingOpt = None, secrets: SecretsOpt = None) -> None:
    """Create the roles and the service accounts (idempotent; sets their current passwords)."""
    admin, values = _admin(tracking_uri, secrets)
    missing = [a.password_env for a in accounts.SERVICE_ACCOUNTS if not values.get(a.password_env)]
    if missing:
        raise BadInput(f"not set: {', '.join(missing)}")
    for line in accounts.provision(admin, values):
        console.print(line, highlight=False)


@access_app.command("add-user")
def add_user(
    username: Annotated[str, typer.Argument(help="The person's MLflow user name.")],
    role: Annotated[
        str, typer.Option(help="loraflow-reader, loraflow-pipeline or loraflow-promoter.")
    ],
    tracking_uri: TrackingOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Add (or update) a user with a role; the password is read from stdin."""
    admin, _ = _admin(tracking_uri, secrets)
    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < envfile.MIN_LENGTH:
        raise BadInput(f"the password needs at least {envfile.MIN_LENGTH} characters")
    console.print(accounts.add_user(admin, username, password, role), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``secrets`` and ``access`` to the ``loraflow`` CLI."""
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(access_app, name="access")
