"""Who is acting: the identity a decision record names.

In the shipped stack every MLflow request is authenticated (``mlflow server --app-name
loraflow-auth``): a process that talks to an ``http(s)://`` tracking server with
``MLFLOW_TRACKING_USERNAME`` set acts as that user, and the server refuses it if the password
does not match (and refuses a decision record that names anybody else). That user is the
identity: the worker's service account, the promoter's, or the named person who ran
``loraflow rollback``. In the embedded mode (SQLite store, no server, nothing authenticates)
it is the operating-system user running the process, as before.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 (a variable name, not a password)
TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Identity:
    name: str
    authenticated: bool  # True: an MLflow server checks this name's password on every request

    def __str__(self) -> str:
        return self.name


def os_user() -> str:
    """The operating-system user running this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


def current(environ: Mapping[str, str] | None = None) -> Identity:
    """The authenticated MLflow user when talking to a server with credentials, else the OS user."""
    env = os.environ if environ is None else environ
    server = env.get(TRACKING_ENV, "").startswith(("http://", "https://"))
    username = env.get(USERNAME_ENV, "").strip()
    if server and username:
        return Identity(username, authenticated=True)
    return Identity(os_user(), authenticated=False)
