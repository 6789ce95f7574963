"""The secrets of a stack, in one env file that ``loraflow secrets`` makes and rotates.

One ``KEY=VALUE`` file serves both deployments: ``docker compose --env-file FILE`` (or
``infra/.env``) interpolates it into ``infra/compose.yaml``, and ``loraflow up --secrets FILE``
hands each process only the values it needs, by environment (never on a command line). The
file is created with mode 0600 and never printed in full: ``masked`` shows a prefix and a
length. Values are ``secrets.token_urlsafe`` strings ([A-Za-z0-9_-]), safe in env files, in
Compose interpolation and inside URLs.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import BadInput

PREFECT_USER = "loraflow"
# Values that shipped as defaults once, or that anyone would guess: refused like empty ones.
KNOWN_DEFAULTS = frozenset({"loraflow", "loraflow-minio", "changeme", "admin", "password"})
MIN_LENGTH = 16


def token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass(frozen=True)
class Secret:
    name: str
    used_by: str
    prefix: str = ""  # e.g. "loraflow:" for a basic-auth string user:password

    def generate(self) -> str:
        return self.prefix + token()

    def secret_part(self, value: str) -> str:
        return value.removeprefix(self.prefix) if self.prefix else value


SECRETS = (
    Secret("POSTGRES_PASSWORD", "PostgreSQL user loraflow (compose: Prefect's and MLflow's stores)"),
    Secret("MINIO_ROOT_PASSWORD", "MinIO root user (compose: MLflow's artifact store)"),
    Secret("GRAFANA_ADMIN_PASSWORD", "Grafana admin (compose)"),
    Secret("PREFECT_AUTH_STRING", "Prefect server basic auth, user:password (API and UI)",
           prefix=f"{PREFECT_USER}:"),
    Secret("MLFLOW_AUTH_ADMIN_PASSWORD", "MLflow admin loraflow-admin (user and role management)"),
    Secret("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLflow server's CSRF key"),
    Secret("LORAFLOW_WORKER_PASSWORD", "MLflow user loraflow-worker (role loraflow-pipeline)"),
    Secret("LORAFLOW_PROMOTER_PASSWORD", "MLflow user loraflow-promoter (role loraflow-promoter)"),
    Secret("LORAFLOW_SERVE_PASSWORD", "MLflow user loraflow-serve (role loraflow-reader)"),
    Secret("LORAFLOW_FEEDBACK_TOKEN", "bearer token for the service's /feedback (and admin) endpoints"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SECRETS}
# Optional: when set, /predict needs this bearer token too (default: /predict is open).
OPTIONAL = ("LORAFLOW_PREDICT_TOKEN",)


def masked(value: str) -> str:
    """Enough to tell two values apart, never enough to use one."""
    if not value:
        return "(empty)"
    return f"{value[:4]}... ({len(value)} chars)"


def problems(values: Mapping[str, str]) -> list[str]:
    """What makes these secrets unfit to start a stack with: missing, empty, default, short."""
    found = []
    for spec in SECRETS:
        value = values.get(spec.name, "")
        secret = spec.secret_part(value)
        if not value:
            found.append(f"{spec.name} is missing or empty")
        elif spec.prefix and not value.startswith(spec.prefix):
            found.append(f"{spec.name} must look like {spec.prefix}<password>")
        elif secret.lower() in KNOWN_DEFAULTS or len(secret) < MIN_LENGTH:
            found.append(f"{spec.name} is a default or shorter than {MIN_LENGTH} characters")
    return found


def render(values: Mapping[str, str]) -> str:
    lines = [
        "# loraflow secrets: made by `loraflow secrets init`, rotated by `loraflow secrets rotate`.",
        "# Mode 0600; never commit it. docker compose --env-file THIS_FILE; loraflow up --secrets.",
    ]
    for spec in SECRETS:
        lines += [f"# {spec.used_by}", f"{spec.name}={values[spec.name]}"]
    for name in OPTIONAL:
        lines += [
            "# optional: /predict needs this bearer token too when set",
            f"{name}={values.get(name, '')}",
        ]
    extra = sorted(set(values) - set(BY_NAME) - set(OPTIONAL))
    lines += [f"{name}={values[name]}" for name in extra]
    return "\n".join(lines) + "\n"


def read(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped); BadInput when unreadable."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the secrets file ({exc.strerror}); "
                       "make one with `loraflow secrets init`") from None  # fmt: skip
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def loose_permissions(path: Path) -> bool:
    """True when group or others may read the file."""
    return bool(Path(path).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def write(path: Path, values: Mapping[str, str], *, replace: bool) -> Path:
    """Write the file with mode 0600 (atomically when replacing; never over one unless told)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".tmp") if replace else path
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise BadInput(f"{path} exists: `loraflow secrets rotate` changes values in it") from None
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(render(values))
    if replace:
        os.replace(target, path)
    return path


def generate(predict_token: bool = False) -> dict[str, str]:
    values = {spec.name: spec.generate() for spec in SECRETS}
    values["LORAFLOW_PREDICT_TOKEN"] = token() if predict_token else ""
    return values


def rotate(values: Mapping[str, str], names: list[str]) -> dict[str, str]:
    """New values for ``names`` (every secret when empty); the rest as they were."""
    unknown = [n for n in names if n not in BY_NAME and n not in OPTIONAL]
    if unknown:
        raise BadInput(f"unknown secret {unknown[0]}; known: {', '.join([*BY_NAME, *OPTIONAL])}")
    chosen = names or list(BY_NAME)
    new = dict(values)
    for name in chosen:
        new[name] = BY_NAME[name].generate() if name in BY_NAME else token()
    return new
