"""A process recorded before a step of the wall clock is still the same process after it.

CI caught it: the machine's clock was stepped while the suite ran, `loraflow down` found none
of the stack's processes ("stopped: nothing was running") and left them running, and training
children took their launcher for dead and stopped themselves. psutil's ``create_time`` is the
boot time plus the process's start since boot, and the kernel moves the boot time
(``btime`` in /proc/stat) by every step of the clock. The step is simulated by showing psutil a
/proc whose ``btime`` is 5 s later, as the kernel shows it after such a step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from flows.cli import stack as stack_cli
from tasks.core.home import Home
from tasks.core.ops import processes, stack

pytestmark = pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc")


@pytest.fixture
def child():
    """A process group of its own, as `loraflow up` starts each of its processes."""
    code = "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def step_the_clock(tmp_path, monkeypatch):
    """Call it with the pids to keep visible: psutil then sees the clock 5 s further on."""

    def step(*pids: int, seconds: int = 5) -> None:
        fake = tmp_path / "proc"
        fake.mkdir()
        booted = psutil.boot_time()
        lines = [
            f"btime {int(booted) + seconds}" if line.startswith("btime ") else line
            for line in Path("/proc/stat").read_text().splitlines()
        ]
        (fake / "stat").write_text("\n".join(lines) + "\n")
        for pid in pids:
            (fake / str(pid)).symlink_to(f"/proc/{pid}")
        monkeypatch.setattr(psutil, "PROCFS_PATH", str(fake))
        assert psutil.boot_time() == booted + seconds

    return step


def test_a_running_process_is_still_alive_after_the_clock_steps(child, step_the_clock):
    started = processes.started_at(child.pid)
    before = psutil.Process(child.pid).create_time()
    step_the_clock(child.pid, os.getpid())
    assert psutil.Process(child.pid).create_time() == pytest.approx(before + 5)  # what moved
    assert processes.alive(child.pid, started)


def test_a_training_child_does_not_take_its_launcher_for_dead(step_the_clock):
    marker = processes.parent_marker()  # what the launcher hands its training processes
    step_the_clock(os.getpid())
    assert processes.parent_alive(marker)


def test_the_stack_is_still_found_by_down_after_the_clock_steps(child, step_the_clock):
    started = stack.Started("worker-cpu", child.pid, processes.started_at(child.pid), "/log")
    step_the_clock(child.pid, os.getpid())
    assert stack_cli.alive(started)
    assert stack_cli.stop_all((started,)) == [f"worker-cpu (pid {child.pid})"]
    assert child.poll() is not None


def test_a_record_of_a_flow_runs_process_survives_the_step(tmp_path, step_the_clock):
    home = Home(tmp_path / "home")
    processes.register_process(home, "finetune", "run-1")
    step_the_clock(os.getpid())
    [record] = processes.records(home)
    assert processes.is_alive(record)


def test_another_process_with_the_same_pid_is_not_the_recorded_one(child):
    started = processes.started_at(child.pid)
    assert processes.alive(child.pid, started)
    assert not processes.alive(child.pid, started - 1)  # a recycled pid starts later or earlier
    child.kill()
    child.wait()
    assert not processes.alive(child.pid, started)


def test_a_stack_file_written_by_an_older_loraflow_still_stops_its_processes(tmp_path, child):
    """Older state files hold psutil's create_time (epoch seconds) under ``create_time``."""
    home = Home(tmp_path / "home")
    state = stack.StackState("http://127.0.0.1:1/api", None, "sqlite:///x.db", ("cpu",))
    stack.write_state(home, state)
    raw = stack.state_path(home).read_text()
    epoch = psutil.Process(child.pid).create_time()
    old = {"name": "worker-cpu", "pid": child.pid, "create_time": epoch, "log": "/log"}
    data = json.loads(raw)
    data["processes"] = [old]
    stack.state_path(home).write_text(json.dumps(data))
    [started] = stack.read_state(home).processes
    assert started.started == epoch
    assert stack_cli.alive(started)
    assert not processes.alive(child.pid, epoch - 2)
