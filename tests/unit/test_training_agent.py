"""The CPU training agent (tasks/core/training/agent.py): forks its ranks with torchrun's
rendezvous variables, fails the job with its first failed rank, forwards SIGTERM, takes its
job on stdin when started early, and leaves no rank behind when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tasks.core.home import REPO_ROOT
from tasks.core.training import child
from tasks.core.training.agent import exit_code, rank_env

LIGHT = ["--entry", "tests.unit.agent_rank", "--preload", "json"]  # no torch: starts at once


def agent(job: Path | None, procs: int = 2, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tasks.core.training.agent", "--procs", str(procs), *LIGHT]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([*argv, *([str(job)] if job else [])], cwd=REPO_ROOT, env=env, **popen)


def job_file(tmp_path: Path, actions: dict[str, str]) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(actions))
    return path


def appears(path: Path, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path


def seen(tmp_path: Path, rank: int) -> dict:
    return json.loads(appears(tmp_path / f"rank-{rank}.json").read_text())


def test_rendezvous_variables_are_torchruns():
    assert rank_env(0, 1, 0) == {}  # one process: no group at all
    one = rank_env(1, 2, 29999)
    assert one["RANK"] == one["LOCAL_RANK"] == "1"
    assert one["WORLD_SIZE"] == one["LOCAL_WORLD_SIZE"] == "2"
    assert (one["MASTER_ADDR"], one["MASTER_PORT"]) == ("127.0.0.1", "29999")


def test_exit_codes_read_as_a_shell_reports_them():
    assert exit_code(0) == 0
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGKILL) == 128 + signal.SIGKILL


def test_every_rank_is_forked_by_the_agent_with_its_own_rank(tmp_path):
    proc = agent(job_file(tmp_path, {}))
    assert proc.wait(timeout=60) == 0
    ranks = [seen(tmp_path, rank) for rank in (0, 1)]
    assert {r["ppid"] for r in ranks} == {proc.pid}
    assert [r["env"]["RANK"] for r in ranks] == ["0", "1"]
    assert [r["name"] for r in ranks] == ["loraflow-rank0", "loraflow-rank1"]  # what ps shows
    assert ranks[0]["env"]["MASTER_PORT"] == ranks[1]["env"]["MASTER_PORT"] is not None


def test_what_every_rank_needs_is_made_once_in_the_agent_and_inherited(tmp_path):
    proc = agent(job_file(tmp_path, {}))
    assert proc.wait(timeout=60) == 0
    ranks = [seen(tmp_path, rank) for rank in (0, 1)]
    assert (tmp_path / "before-fork-calls").read_text() == "x"  # once, not once per rank
    assert [r["before_fork_pid"] for r in ranks] == [proc.pid, proc.pid]
    # The agent's heap is frozen for the ranks' collector: no copy-on-write walk of it.
    assert all(r["gc_frozen"] > 1000 for r in ranks)


def test_a_failed_before_fork_leaves_the_work_to_the_ranks(tmp_path):
    proc = agent(job_file(tmp_path, {"before": "fail"}), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0  # the ranks ran, and their outcome is the job's
    assert "before_fork failed on purpose" in err
    assert [seen(tmp_path, rank)["before_fork_pid"] for rank in (0, 1)] == [None, None]


def test_one_failed_rank_fails_the_job_and_stops_the_others(tmp_path):
    proc = agent(job_file(tmp_path, {"0": "trap", "1": "exit-when-trapped:3"}))
    assert proc.wait(timeout=30) == 3  # not after rank 0's 60 s
    assert (tmp_path / "stopped-0").read_text() == str(int(signal.SIGTERM))


def test_sigterm_to_the_agent_reaches_every_rank(tmp_path):
    proc = agent(job_file(tmp_path, {"0": "trap", "1": "trap"}))
    for rank in (0, 1):
        appears(tmp_path / f"trapped-{rank}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert all((tmp_path / f"stopped-{rank}").exists() for rank in (0, 1))


def test_a_killed_agent_leaves_no_rank_running(tmp_path):
    proc = agent(job_file(tmp_path, {"0": "trap", "1": "sleep:60"}))
    pids = [seen(tmp_path, rank)["pid"] for rank in (0, 1)]
    appears(tmp_path / "trapped-0")
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
        assert time.monotonic() < deadline, "a rank outlived its agent"
        time.sleep(0.1)
    assert (tmp_path / "stopped-0").exists()  # told with SIGTERM: it could checkpoint


def test_an_early_agent_takes_its_job_from_stdin(tmp_path):
    proc = agent(None, stdin=subprocess.PIPE)
    proc.stdin.write(f"{job_file(tmp_path, {'1': 'exit:0'})}\n".encode())
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert seen(tmp_path, 1)["ppid"] == proc.pid


def test_an_early_agent_no_job_came_for_exits_without_forking(tmp_path):
    proc = agent(None, stdin=subprocess.PIPE)
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert not list(tmp_path.iterdir())


def test_prestart_waits_for_launch_and_is_discarded_when_no_job_comes():
    train = {"batch_size": 32, "cpu_processes": 2}
    try:
        assert child.prestart(train)
        proc = child._waiting[2]
        assert child.take_prestarted(gpus=1, procs=2) is None  # a GPU job: not for it
        assert child.take_prestarted(gpus=0, procs=2) is proc  # each agent serves one job
        assert child.take_prestarted(gpus=0, procs=2) is None
        child._waiting[2] = proc
    finally:
        child.discard_prestarted()
    assert proc.wait(timeout=10) != 0 and not child._waiting  # stopped, not left running


def test_a_job_for_an_agent_that_died_goes_to_a_fresh_one(tmp_path):
    from tasks.core.training.launcher import handed

    dead = agent(None, stdin=subprocess.PIPE)
    dead.kill()
    dead.wait(timeout=10)
    assert handed(dead, tmp_path / "job.json") is None  # launch then starts a fresh agent
    assert handed(None, tmp_path / "job.json") is None


def test_an_early_agent_leaves_a_ctrl_c_to_the_command_that_started_it(tmp_path):
    proc = agent(None, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ignores_sigint(proc.pid):  # past its start-up
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    assert proc.poll() is None  # still waiting: the command stops it (``discard_prestarted``)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert b"KeyboardInterrupt" not in proc.stderr.read()


def ignores_sigint(pid: int) -> bool:
    """Whether SIGINT's bit is set in the process's ignored-signal mask (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False
