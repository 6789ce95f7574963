"""Start-up off the critical path: `run` reuses a running Prefect server, the time split."""

from __future__ import annotations

import dataclasses
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.cli.pipeline import time_line
from flows.cli.prefect_api import TEMPORARY, connect, use_running_server
from tasks.core.ops import stack
from tests.flows.conftest import mirrored, write_config  # noqa: F401 (fixture)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


@pytest.fixture
def prefect_like_server():
    """A loopback HTTP server answering Prefect's health route, as `loraflow up`'s does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_run_uses_the_running_stack_server_instead_of_a_temporary_one(
    home, monkeypatch, prefect_like_server
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert use_running_server(home) is None  # no stack: Prefect starts a temporary server

    state = stack.StackState(prefect_like_server, None, home.tracking_uri, ("cpu",))
    stack.write_state(home, state)
    api = f"{prefect_like_server}/api"
    assert use_running_server(home) == api
    import os

    assert os.environ["PREFECT_API_URL"] == api
    chosen = connect(home)  # what run, promote, monitor and status use
    assert (chosen.running, chosen.temporary, chosen.describe()) == (api, None, api)
    chosen.ready()  # nothing to wait for


def test_the_stacks_auth_string_goes_only_to_the_stacks_server(
    home, tmp_path, monkeypatch, prefect_like_server
):
    """An authenticated stack's Prefect auth string is given to a command that talks to that
    stack's server (found, or exported as `up` prints it), never to another server."""
    import os

    secrets = tmp_path / "stack.env"
    secrets.write_text("PREFECT_AUTH_STRING=admin:s3cret\n")
    state = stack.StackState(prefect_like_server, None, home.tracking_uri, ("cpu",))
    stack.write_state(home, dataclasses.replace(state, secrets=str(secrets)))
    api = f"{prefect_like_server}/api"
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(key, raising=False)
    assert use_running_server(home) == api  # found from stack.json
    assert os.environ["PREFECT_API_AUTH_STRING"] == "admin:s3cret"

    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    monkeypatch.setenv("PREFECT_API_URL", f"{api}/")  # exported by hand, as `up` prints it
    assert use_running_server(home) == f"{api}/"
    assert os.environ["PREFECT_API_AUTH_STRING"] == "admin:s3cret"

    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")  # another server
    assert use_running_server(home) == "http://127.0.0.1:1/api"
    assert "PREFECT_API_AUTH_STRING" not in os.environ


def test_a_recorded_but_dead_server_is_not_used(home, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    dead = f"http://127.0.0.1:{stack.free_port()}"
    stack.write_state(home, stack.StackState(dead, None, home.tracking_uri, ("cpu",)))
    assert use_running_server(home) is None
    assert not stack.server_answers(f"{dead}/api")


def test_a_user_set_api_url_wins(home, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert use_running_server(home) == "http://127.0.0.1:1/api"


def test_the_time_line_splits_wall_time_into_compute_and_overhead():
    line = time_line(100.0, {"training": 60.0, "evaluation": 12.0})
    assert line == (
        "wall 100.0 s = training 60.0 s + evaluation 12.0 s + pipeline overhead 28.0 s; "
        "evaluation/training 0.20"
    )
    cached = time_line(20.0, {"training": 0.0, "evaluation": 0.0})
    assert "pipeline overhead 20.0 s" in cached and "n/a (training cached)" in cached
    # The base scored beside training overlapped its wall time: shown, not in the split.
    beside = time_line(100.0, {"training": 60.0, "evaluation": 10.0, "base_during_training": 2.5})
    assert "pipeline overhead 30.0 s; evaluation/training 0.17" in beside
    assert beside.endswith("; base model scored while training ran: 2.5 s")


SERVED = """
import httpx, sys
from tasks.core.home import apply_env
from flows.cli.temp_server import TemporaryServer

home = apply_env()
server = TemporaryServer(home.prefect_home / "temporary-server.log").start()
server.wait()
from prefect import flow
from prefect.server.api.server import SubprocessASGIServer

@flow
def hello() -> str:
    return "hi"

state = hello(return_state=True)
runs = httpx.post(f"{server.api_url}/flow_runs/filter", json={}).json()
assert state.result() == "hi" and str(state.state_details.flow_run_id) in {r["id"] for r in runs}
assert not SubprocessASGIServer._instances, "Prefect started a server of its own"
print(server.process.pid)
"""


def test_the_temporary_server_serves_the_flows_and_stops_with_the_command(home, monkeypatch):
    """`run` with no server: Prefect's own server app, started by loraflow without importing it
    in the command's process, serves that process's flows (Prefect starts none of its own),
    and it stops when the command ends."""
    import subprocess
    import sys

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    done = subprocess.run(
        [sys.executable, "-c", SERVED], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Starting temporary server" not in done.stdout + done.stderr
    pid = int(done.stdout.split()[-1])
    assert not Path(f"/proc/{pid}").exists(), "the temporary server outlived the command"


def test_status_without_a_server_starts_loraflows_temporary_one_not_prefects(home, monkeypatch):
    """`status` on a home with no server: loraflow's temporary server (seeded, started before
    the imports), not Prefect's ephemeral one, which imported the server application into the
    command and registered every block type again (19 s of CPU for an empty status)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "status"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"prefect: {TEMPORARY}" in done.stdout, done.stdout
    assert (home.prefect_home / "temporary-server.log").is_file()
    assert "Starting temporary server" not in done.stdout + done.stderr


def heartbeat_threads() -> list[threading.Thread]:
    """Prefect's flow-run heartbeat threads (their loop is named ``heartbeat_loop``)."""
    return [
        t
        for t in threading.enumerate()
        if any(getattr(a, "__name__", "") == "heartbeat_loop" for a in getattr(t, "_args", ()))
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_flow_runs_on_the_temporary_server_send_no_heartbeats():
    """`run` on its temporary server runs its flow without Prefect's heartbeat thread, whose
    1 s sleep was joined at the end of every run (tests/benchmarks/bench_flow_exit.py);
    Prefect's default, kept against a running server, starts one."""
    from prefect import flow

    from flows.cli.temp_server import without_heartbeats

    @flow
    def probe() -> int:
        return len(heartbeat_threads())

    assert probe() == 1  # the check sees the thread where there is one
    with without_heartbeats():
        assert probe() == 0
    assert probe() == 1


def slow_step() -> None:
    """A preload step that is still running when the server is already there."""
    time.sleep(1.5)


class Stopped(Exception):
    pass


@pytest.mark.usefixtures("mirrored")
def test_nothing_runs_beside_the_imports_of_the_first_stages(
    home, tmp_path, monkeypatch, prefect_like_server
):
    """The first stages' imports are done before anything else of the pipeline runs, also
    with a running server (no wait to overlap them with): two threads importing one package
    can hand one a half imported module (seen: the data stage's `datasets` read transformers
    half imported from a preload thread, and the run failed)."""
    from flows.cli import pipeline, reconcile
    from tasks.core.training import child

    monkeypatch.setenv("PREFECT_API_URL", f"{prefect_like_server}/api")
    slow = (*pipeline.FIRST_STAGES, "tests.cli.test_startup:slow_step")
    monkeypatch.setattr(pipeline, "FIRST_STAGES", slow)
    beside: list[str] = []

    def first_after_the_wait(home):
        beside.extend(t.name for t in threading.enumerate() if t.name.startswith("preload-"))
        raise Stopped

    monkeypatch.setattr(reconcile, "reconcile", first_after_the_wait)
    started = time.monotonic()
    with pytest.raises(Stopped):
        pipeline.run_pipeline(write_config(tmp_path), force=False)
    assert beside == [] and time.monotonic() - started >= 1.5
    assert not child._waiting, "the early training agent outlived the command"
