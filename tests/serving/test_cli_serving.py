"""`loraflow serve` in the foreground as a user starts it, and the serving commands' bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import yaml

from tasks.core.serving.runner import wait_ready
from tests.conftest import REPO
from tests.serving.conftest import NAME


def loraflow(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli.app", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_in_the_foreground_on_loopback(home, registry, tmp_path):
    _, (v1, _) = registry
    policy = tmp_path / "canary.yaml"
    policy.write_text(
        yaml.safe_dump({"kind": "canary-policy", "version": "t", "serving": {"poll_seconds": 0.2}})
    )
    port = free_port()
    process = loraflow("serve", NAME, "--port", port, "--policy", policy)
    try:
        state = wait_ready(f"http://127.0.0.1:{port}", 120)
        assert state["champion"] == v1
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "good"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["version"] == v1
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    assert f"on http://127.0.0.1:{port}" in out


@pytest.mark.parametrize("command", ["serve", "promote"])
def test_bad_policy_exits_2_with_one_line(home, tmp_path, command):
    policy = tmp_path / "canary.yaml"
    policy.write_text(yaml.safe_dump({"kind": "canary-policy", "version": "t", "steps": [50]}))
    process = loraflow(command, NAME, "--policy", policy)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "steps" in lines[0] and "last step must be 100" in lines[0]
