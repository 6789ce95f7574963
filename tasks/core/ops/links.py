"""Where the UIs of this state home answer, and the page of a run in each.

A hint that says "open http://127.0.0.1:4200" while ``loraflow up`` serves the UI on another
port sends the user nowhere. The addresses come, in this order, from the environment
(``PREFECT_UI_URL`` / ``PREFECT_API_URL``, an ``http(s)`` ``MLFLOW_TRACKING_URI``) and from
the state file of a stack that ``loraflow up`` started on this home and that still answers.
None means no server is known: the run is in the embedded stores, and ``loraflow ui`` says
how to open them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from tasks.core.home import Home
from tasks.core.ops.stack import read_state


@dataclass(frozen=True)
class UiLinks:
    prefect: str | None = None  # the Prefect UI's base URL
    mlflow: str | None = None  # the MLflow UI's base URL
    from_stack: bool = False  # found through a running `loraflow up`

    def flow_run(self, flow_run_id: str) -> str | None:
        return f"{self.prefect}/runs/flow-run/{flow_run_id}" if self.prefect else None

    def mlflow_run(self, experiment_id: str, run_id: str) -> str | None:
        if not self.mlflow:
            return None
        return f"{self.mlflow}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version(self, name: str, version: str) -> str | None:
        return f"{self.mlflow}/#/models/{name}/versions/{version}" if self.mlflow else None


TEMPORARY_ENV = "LORAFLOW_PREFECT_TEMPORARY"  # set while PREFECT_API_URL is a temporary server


def answers(url: str, timeout: float = 0.5) -> bool:
    """Whether something listens at the URL's host and port."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def ui_links(home: Home, environ: dict[str, str] | None = None) -> UiLinks:
    """The UIs to point at: the environment's servers, else the running stack's, else none."""
    environ = os.environ if environ is None else environ
    prefect = environ.get("PREFECT_UI_URL") or None
    # A command's temporary server (``flows/cli/temp_server.py``) is gone when it ends, and
    # serves no UI: no page to point at.
    if not prefect and environ.get("PREFECT_API_URL") and not environ.get(TEMPORARY_ENV):
        prefect = environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    tracking = environ.get("MLFLOW_TRACKING_URI", "")
    mlflow = tracking.rstrip("/") if tracking.startswith(("http://", "https://")) else None
    state = read_state(home)
    if state is not None and answers(state.prefect_url):
        return UiLinks(prefect or state.prefect_url, mlflow or state.mlflow_url, True)
    return UiLinks(prefect, mlflow)
