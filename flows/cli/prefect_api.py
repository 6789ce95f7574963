"""Which Prefect server a command talks to: the one already running, else its own temporary one.

``run``, ``promote``, ``monitor`` and ``status`` need a Prefect API. Without one, Prefect's
client starts its own ephemeral server (``SubprocessASGIServer``): it imports the whole server application
into the command's process first, registers every block type again and is never the stack's
server, even while `loraflow up` runs one on this home (a second server on the same
database). Measured before this module: ``loraflow status`` on a fresh home took 19 s of wall
and 19 s of CPU. Every command that needs Prefect now asks here once, before it imports
Prefect: the user's ``PREFECT_API_URL``, else the home's running stack (with its credentials),
else loraflow's temporary server (``temp_server``), started at once so that it comes up while
the command imports what it needs, and stopped when the command ends.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.core.home import Home

if TYPE_CHECKING:  # temp_server imports httpx: only where a server is started
    from flows.cli.temp_server import TemporaryServer

TEMPORARY = "temporary server (none running: `loraflow up` keeps one)"


@dataclass
class PrefectApi:
    """The API a command uses: ``running`` (a server that was up) or ``temporary`` (started)."""

    running: str | None
    temporary: TemporaryServer | None = None

    def ready(self) -> None:
        """Block until the temporary server answers (a running one already does)."""
        if self.temporary is not None:
            self.temporary.wait()

    def flow_settings(self):
        """Settings for this command's flow runs: no heartbeats to a temporary server."""
        if self.temporary is None:
            return contextlib.nullcontext()
        from flows.cli.temp_server import without_heartbeats

        return without_heartbeats()

    def describe(self) -> str:
        return self.running or TEMPORARY


def connect(home: Home) -> PrefectApi:
    """The command's Prefect API, chosen before Prefect is imported (it reads its settings once,
    at import): a running server, else a temporary one, starting now."""
    running = use_running_server(home)
    if running is not None:
        return PrefectApi(running)
    return PrefectApi(None, start_temporary_server(home))


def use_running_server(home: Home) -> str | None:
    """Point Prefect at the stack's server when one answers (no temporary server to start);
    its API URL, or None. ``PREFECT_API_URL`` set by the user wins. The stack's auth string
    goes only to the stack's own server (``up`` prints its URL to export)."""
    from flows.cli.stack import use_stack_credentials
    from tasks.core.ops.stack import api_url, server_answers

    stack_api = api_url(home, environ={})
    chosen = os.environ.get("PREFECT_API_URL")
    if not chosen and stack_api and server_answers(stack_api):
        chosen = os.environ["PREFECT_API_URL"] = stack_api
    if chosen and stack_api and chosen.rstrip("/") == stack_api.rstrip("/"):
        use_stack_credentials(home)  # an authenticated stack's; none: nothing set
    return chosen


def start_temporary_server(home: Home):
    """Prefect's temporary server for this command, started now (``temp_server``); it does
    not register Prefect's block types where the home's database has them already."""
    from flows.cli.temp_server import TemporaryServer
    from tasks.core.ops.templates import blocks_registered

    registered = blocks_registered(home.own_databases()[0])
    log = home.prefect_home / "temporary-server.log"
    return TemporaryServer(log, register_blocks=not registered).start()
