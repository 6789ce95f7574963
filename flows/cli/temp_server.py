"""The temporary Prefect server of a ``loraflow run`` with no server running (`loraflow up`).

Prefect starts one itself when a flow has no API (``SubprocessASGIServer``), but it imports the
whole server application into this process first, only to start it in another: about 2 s of
this process's time (its GIL) on the path to the first stage, measured with py-spy. Here the
same command (Prefect's own uvicorn factory, UI off, ephemeral mode, this process's settings)
starts as soon as the config is checked, while this process imports the pipeline; Prefect's
client is pointed at it through ``PREFECT_API_URL``, and it stops when the command ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.core.ops.links import TEMPORARY_ENV
from tasks.core.ops.stack import free_port

READY_TIMEOUT_S = 60.0

# ``python -m uvicorn ARGS``, tied to the command that starts it first: Linux sends it SIGTERM
# when that process (its starting thread) dies, even by ``kill -9``, which runs no exit handler;
# without it the server outlived a killed command, holding its port and ~200 MB. Elsewhere it
# is not tied. The same tie as a training rank's to its agent (``agent._tie_to_agent``), written
# out here because the server imports none of loraflow: only the standard library, then uvicorn.
TIED_UVICORN = """
import os, runpy, signal, sys
parent = int(sys.argv.pop(1))
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:  # the command died before the call: nobody would stop this server
    sys.exit(0)
sys.argv[0] = "uvicorn"
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


class TemporaryServer:
    """``start()`` returns at once; ``wait()`` blocks until ``/api/health`` answers."""

    def __init__(self, log_path: Path, port: int | None = None, register_blocks: bool = True):
        self.log_path = log_path  # its stderr: the console stays the pipeline's
        self.port = port or free_port()
        # False where the database already holds them (``templates.blocks_registered``).
        self.register_blocks = register_blocks
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        import importlib.util

        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # not imported
        return [
            sys.executable, "-c", TIED_UVICORN, str(os.getpid()),
            "--app-dir", str(prefect_dir.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip

    def start(self) -> TemporaryServer:
        """Start it, and point this process's Prefect at it: before Prefect is imported here,
        since Prefect reads its settings once, at import (the server reads the same ones,
        from the same environment and ``PREFECT_HOME`` profile)."""
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",  # as Prefect's own temporary server: no UI, no services
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        if not self.register_blocks:
            env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
        env.pop("PREFECT_API_URL", None)
        env.pop(TEMPORARY_ENV, None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        atexit.register(self.stop)
        os.environ["PREFECT_API_URL"] = self.api_url
        os.environ[TEMPORARY_ENV] = "1"  # no UI links to it: it ends with the command
        return self

    def wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    tail = self.log_path.read_text(errors="replace").strip()[-400:]
                    raise RuntimeError(
                        f"temporary Prefect server exited with {self.process.returncode} "
                        f"({self.log_path}): {tail}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"temporary Prefect server on port {self.port} not up in {timeout_s} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def without_heartbeats():
    """Settings for the flow runs of a command on its temporary server: no flow-run heartbeats.
    A heartbeat tells a server that the run still lives; this server stops with the command,
    and loraflow's reconcile (the next command's) marks a killed run crashed. Prefect's
    heartbeat thread sleeps in 1 s ticks and is joined when the flow ends: up to 1 s at the end
    of every run, waiting."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
