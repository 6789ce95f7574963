"""The training agent forked from the pipeline's command (tasks/core/training/forked.py): it
takes its job from a pipe, names itself, keeps none of the command's exit handlers or unwritten
output, and is only forked from a process with no other thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from tasks.core.home import REPO_ROOT
from tasks.core.training.forked import ForkedAgent, fork_agent
from tests.unit.test_training_agent import LIGHT, job_file, seen

# A fresh, single-threaded process (pytest's has threads): what `loraflow run` is when it forks.
FORKS = """
import atexit, gc, json, os, sys
from pathlib import Path
from tasks.core.training.forked import fork_agent

tmp = Path(sys.argv[1])
atexit.register(lambda: (tmp / "exits").open("a").write("command\\n"))
print("written before the fork", end="")  # still in this process's buffer
env = {**os.environ, "LORAFLOW_TEST_MARK": "agent environment"}
agent = fork_agent(["--procs", "2", *json.loads(sys.argv[2])], env)
assert agent is not None, "no fork"
assert gc.get_freeze_count() == 0, "the command's heap left frozen: never collected"
agent.stdin.write(f"{sys.argv[3]}\\n".encode())
agent.stdin.close()
print(f"\\nagent {agent.pid} exited {agent.wait(60)}")
"""


def fork_from_a_command(tmp_path, actions: dict[str, str]) -> subprocess.CompletedProcess:
    """FORKS run in a fresh process with a job of ``actions`` for the test ranks."""
    job = job_file(tmp_path, actions)
    return subprocess.run(
        [sys.executable, "-c", FORKS, str(tmp_path), json.dumps(LIGHT), str(job)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_forked_agent_runs_its_job_from_the_pipe_and_leaves_the_command_its_own(tmp_path):
    done = fork_from_a_command(tmp_path, {"0": "exit:0", "1": "exit:0"})
    assert done.returncode == 0, done.stderr[-2000:]
    agent = int(done.stdout.split("agent ")[1].split()[0])
    assert done.stdout.endswith(f"agent {agent} exited 0\n")
    assert done.stdout.count("written before the fork") == 1  # not flushed again by a fork
    for rank in (0, 1):
        rank_seen = seen(tmp_path, rank)
        assert rank_seen["ppid"] == agent and rank_seen["parent_name"] == "loraflow-agent"
        assert rank_seen["name"] == f"loraflow-rank{rank}"
        assert rank_seen["mark"] == "agent environment"
    # The command's exit handler (in `loraflow run`: its temporary server's stop) ran once,
    # in the command: not in the agent, not in a rank.
    assert (tmp_path / "exits").read_text() == "command\n"


def test_a_failed_rank_fails_the_forked_agent(tmp_path):
    done = fork_from_a_command(tmp_path, {"0": "exit:0", "1": "exit:3"})
    assert "exited 3" in done.stdout, done.stderr[-2000:]


def test_no_fork_beside_another_thread():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert fork_agent(["--procs", "1", *LIGHT], dict(os.environ)) is None
    finally:
        stop.set()
        other.join()


def test_a_forked_child_is_waited_for_polled_and_signalled_as_with_popen():
    # A child of this process by posix_spawn: forking pytest itself would leave a copy of the
    # test session running in the child (its fixtures' teardown, its worker channel).
    pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], dict(os.environ))
    child = ForkedAgent(pid, None)
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.05)
    child.terminate()
    assert child.wait(10) == -signal.SIGTERM and child.poll() == -signal.SIGTERM
    child.kill()  # already gone: nothing to signal, no error
