"""``kill -9`` of a promotion mid-canary and of a pipeline mid-training: the canary's share
lapses, the service routes everything to the champion, and after the next ``loraflow status``
no view shows a run as running that nobody runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from tasks.core.registry.history import history
from tasks.core.tracking import client
from tests.conftest import REPO
from tests.flows.conftest import write_config
from tests.serving.conftest import NAME, start
from tests.serving.models import register_version, untrained_adapter

LEASE_S = 6


def cli_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    return env | {"LORAFLOW_HOME": str(home.root), "COLUMNS": "250"}


def loraflow(home, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *args],
        cwd=REPO, env=cli_env(home), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def spawn(home, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli.app", *args],
        cwd=REPO, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_kill_9_of_promote_mid_canary_returns_traffic_to_the_champion(home, mirrored, tmp_path):
    mlc = client(home.tracking_uri)
    v1, v2 = (
        register_version(
            mlc, NAME, untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / f"a{s}", s)
        )
        for s in (1, 2)
    )
    mlc.set_registered_model_alias(NAME, "champion", v1)
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    policy = tmp_path / "canary.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "kind": "canary-policy",
                "version": "kill-test",
                "steps": [50, 100],
                "analysis": {
                    "interval_seconds": 120,
                    "lease_seconds": LEASE_S,
                    "settle_seconds": 60,
                },
                "replay": {"enabled": False},
                "serving": {"poll_seconds": 0.2},
            }
        )
    )  # fmt: skip - a long step: the kill lands in the middle of it
    with start(home) as server:
        server.wait_ready(60)
        promote = spawn(home, "promote", NAME, "--policy", str(policy), "--service-url", server.url)
        try:
            server.wait_ready(120, until=lambda s: s["challenger_percent"] == 50)
            children = psutil.Process(promote.pid).children(recursive=True)
        finally:
            os.kill(promote.pid, signal.SIGKILL)
            promote.wait(30)
        # The killed command's temporary Prefect server stops by itself (tied to it).
        gone, alive = psutil.wait_procs(children, timeout=30)
        for leftover in alive:
            leftover.kill()
        assert children and not alive, [p.cmdline() for p in alive]
        killed_at = time.monotonic()
        state = server.wait_ready(LEASE_S + 10, until=lambda s: s["challenger_percent"] == 0)
        assert time.monotonic() - killed_at <= LEASE_S + 5
        assert state["canary"]["state"] in ("expired", "ended")
        wait_for(lambda: history(mlc, NAME, v2, kind="canary-abort"), 15, "the abort record")
    (abort,) = history(mlc, NAME, v2, kind="canary-abort")
    assert "expired" in abort.reason and abort.actor.startswith("service:")

    status = loraflow(home, "status")
    assert status.returncode == 0, status.stderr
    assert "reconciled: flow run promote" in status.stdout and "Crashed" in status.stdout
    flow_lines = [line for line in status.stdout.splitlines() if line.startswith("flow run")]
    assert flow_lines and not any(": Running" in line for line in flow_lines), status.stdout
    canary_runs = mlc.search_runs(
        [mlc.get_experiment_by_name("tests").experiment_id],
        filter_string="tags.`loraflow.run_type` = 'canary'",
    )
    assert [r.info.status for r in canary_runs] == ["KILLED"]
    assert "ended, 0 % to the challenger" in status.stdout
    again = loraflow(home, "status")
    assert "reconciled" not in again.stdout  # nothing left to fix


def is_trainer(process) -> bool:
    """The training agent (forked from `run`, or started fresh) or one of its ranks."""
    try:
        name, cmdline = process.name(), " ".join(process.cmdline())
    except psutil.Error:
        return False
    return name.startswith("loraflow-") or "tasks.core.training.agent" in cmdline


@pytest.mark.usefixtures("mirrored")
def test_kill_9_of_run_mid_training_leaves_no_zombie(home, tmp_path):
    config = write_config(
        tmp_path,
        train={
            "epochs": 400,
            "batch_size": 4,
            "max_length": 16,
            "logging_steps": 1,
            "checkpoint_steps": 20,
            "cpu_processes": 1,
        },
    )  # fmt: skip - thousands of steps: the kill lands mid-training
    run = spawn(home, "run", str(config))
    mlc = client(home.tracking_uri)
    try:

        def training() -> list:
            if not home.mlflow_db.exists():
                return []
            runs = mlc.search_runs(
                [e.experiment_id for e in mlc.search_experiments()],
                filter_string="tags.`loraflow.run_type` = 'training'",
            )
            return [r for r in runs if "train_loss" in r.data.metrics]

        (trained,) = wait_for(training, 240, "training to log its first steps")
        children = psutil.Process(run.pid).children(recursive=True)
        names = [p.name() for p in children if is_trainer(p)]
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
    trainers = [p for p in children if is_trainer(p)]
    others = [p for p in children if p not in trainers]  # the command's temporary server
    assert len(trainers) == 2, trainers  # the agent and its one rank
    # forked from `run` (its imports are the command's), not started fresh
    assert sorted(names) == ["loraflow-agent", "loraflow-rank0"], names
    # The rank notices its task is gone, checkpoints and stops; its agent then exits. The
    # temporary Prefect server stops too: nothing of the killed command keeps running.
    gone, alive = psutil.wait_procs(trainers + others, timeout=60)
    for leftover in alive:
        leftover.kill()
    assert others and not alive, [p.cmdline() for p in alive]

    status = loraflow(home, "status")
    assert status.returncode == 0, status.stderr
    assert "reconciled: flow run tiny-test" in status.stdout, status.stdout
    assert f"MLflow run {trained.info.run_id}: RUNNING -> KILLED" in status.stdout
    flow_lines = [line for line in status.stdout.splitlines() if line.startswith("flow run")]
    assert flow_lines and all("Crashed" in line for line in flow_lines), status.stdout
    assert "Running" not in "\n".join(flow_lines)
    assert mlc.get_run(trained.info.run_id).info.status == "KILLED"
