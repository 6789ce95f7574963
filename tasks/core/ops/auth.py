"""Authentication of the local stack (``loraflow up --secrets FILE``), as plain data.

Each process gets only the secrets it needs, by environment (never on its command line, so
``ps`` shows none): the Prefect server its basic-auth string
(``PREFECT_SERVER_API_AUTH_STRING``), the MLflow server its admin password, CSRF key and the
path of its auth config (it runs ``--app-name loraflow-auth``), each worker the Prefect
client's auth string and the MLflow credentials of ``loraflow-worker``, which it uses against
the MLflow server (not the store behind it). Secrets inherited from the shell that started
``up`` are removed first, so no process holds another's. Without ``--secrets`` the stack is
the embedded one: loopback only, nothing authenticated, and it says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.home import Home
from tasks.core.security import accounts, envfile

# Variables that carry a secret; stripped from what the stack's processes inherit.
SECRET_VARS = frozenset(
    {
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_API_KEY",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        *(s.name for s in envfile.SECRETS),
        *envfile.OPTIONAL,
    }
)
APP_NAME = "loraflow-auth"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PASSWORD_IN_URI = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@]+:)(?P<password>[^@/]+)@", re.I)


def redact_uri(uri: str) -> str:
    """``scheme://user:PASSWORD@host`` -> ``scheme://user:***@host`` (shown, stored)."""
    return _PASSWORD_IN_URI.sub(lambda m: f"{m['head']}***@", uri)


def scrub(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_VARS}


@dataclass(frozen=True)
class StackAuth:
    """The secrets of an authenticated local stack (read from ``source``)."""

    values: Mapping[str, str] = field(repr=False)
    source: Path

    def auth_ini(self, home: Home) -> Path:
        return home.mlflow_dir / "auth.ini"

    def auth_db(self, home: Home) -> str:
        return f"sqlite:///{home.mlflow_dir / 'auth.db'}"

    def prefect_server_env(self) -> dict[str, str]:
        return {"PREFECT_SERVER_API_AUTH_STRING": self.values["PREFECT_AUTH_STRING"]}

    def prefect_client_env(self) -> dict[str, str]:
        return {"PREFECT_API_AUTH_STRING": self.values["PREFECT_AUTH_STRING"]}

    def mlflow_server_env(self, home: Home) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_ini(home)),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.values["MLFLOW_AUTH_ADMIN_PASSWORD"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        }

    def worker_env(self, mlflow_url: str) -> dict[str, str]:
        return accounts.client_env(accounts.WORKER, self.values, mlflow_url)


def load(path: Path) -> StackAuth:
    """The secrets file for ``loraflow up``; BadInput naming what is missing or weak."""
    from tasks.core.errors import BadInput

    values = envfile.read(path)
    found = envfile.problems(values)
    if found:
        raise BadInput(f"{path}: {'; '.join(found)} (loraflow secrets init / rotate)")
    return StackAuth(values, Path(path).resolve())
