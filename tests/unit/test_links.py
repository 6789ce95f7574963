"""Hints point at the UIs that actually answer (issue 14): the stack `loraflow up` runs on
this home, or the servers the environment names; never a port nothing listens on."""

from __future__ import annotations

import io
import socket

from rich.console import Console

from tasks.core.home import Home
from tasks.core.ops.links import ui_links
from tasks.core.ops.stack import StackState, write_state


def test_links_follow_the_running_stack_then_the_environment(tmp_path, monkeypatch):
    from flows.cli import inspect

    for name in ("PREFECT_UI_URL", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)  # print_ui_help reads the environment
    home = Home(tmp_path / "home")
    assert ui_links(home, {}) == ui_links(home, {"MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    assert ui_links(home, {}).prefect is None

    with socket.socket() as server:  # a stack's Prefect server on a port of its own
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        state = StackState(f"http://127.0.0.1:{port}", "http://127.0.0.1:5123", "sqlite://", ())
        write_state(home, state)
        links = ui_links(home, {})
        assert (
            links.from_stack
            and links.flow_run("abc") == f"http://127.0.0.1:{port}/runs/flow-run/abc"
        )
        assert links.mlflow_run("1", "r") == "http://127.0.0.1:5123/#/experiments/1/runs/r"
        buffer = io.StringIO()
        monkeypatch.setattr(inspect, "console", Console(file=buffer, width=80, soft_wrap=True))
        inspect.print_ui_help(home, "abc")
        printed = buffer.getvalue()
        assert f"Prefect UI: http://127.0.0.1:{port}/runs/flow-run/abc" in printed
        assert "MLflow UI:  http://127.0.0.1:5123" in printed and "4200" not in printed

    assert ui_links(home, {}).prefect is None  # the state file of a stack that is gone
    remote = ui_links(
        home,
        {"PREFECT_API_URL": "http://prefect:4200/api", "MLFLOW_TRACKING_URI": "http://ml:5000"},
    )
    assert (remote.prefect, remote.mlflow) == ("http://prefect:4200", "http://ml:5000")
    # A command's temporary server ends with it and serves no UI: no link to it.
    temporary = {"PREFECT_API_URL": "http://127.0.0.1:45123/api", "LORAFLOW_PREFECT_TEMPORARY": "1"}
    assert ui_links(home, temporary).prefect is None
