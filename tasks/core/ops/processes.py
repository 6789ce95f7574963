"""Which local process runs which flow run, so a run whose process died is not shown running.

Prefect marks a flow run Crashed when its process reports the crash; ``kill -9`` (or the OOM
killer, a power cut) reports nothing, and the run, its task runs and its MLflow runs would
show ``Running`` forever. Each flow started on this machine writes a small record here
(``<home>/processes/<flow run id>.json``: pid, the process's start time, host); the
reconciler (``loraflow status`` / ``run`` / ``promote``) compares it with the live processes.
The start time guards against a recycled pid; it is read as time since boot (``started_at``),
which a step of the wall clock does not move.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from tasks.core.home import Home

PARENT_ENV = "LORAFLOW_PARENT_PROCESS"  # "pid:start time" of the task that launched a child


@dataclass(frozen=True)
class ProcessRecord:
    flow_run_id: str
    kind: str  # finetune, promotion, validate-data, ...
    pid: int
    started: float  # started_at(pid): seconds since boot (an epoch time in older records)
    host: str

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()


def folder(home: Home) -> Path:
    return home.root / "processes"


def this_process(flow_run_id: str, kind: str) -> ProcessRecord:
    pid = os.getpid()
    return ProcessRecord(flow_run_id, kind, pid, started_at(pid), socket.gethostname())


def register_process(home: Home, kind: str, flow_run_id: str) -> Path | None:
    """Record that this process runs ``flow_run_id`` (nothing outside a flow run)."""
    if not flow_run_id:
        return None
    path = folder(home) / f"{flow_run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(this_process(flow_run_id, kind))))
    os.replace(tmp, path)
    return path


def records(home: Home) -> list[ProcessRecord]:
    found = []
    for path in sorted(folder(home).glob("*.json")):
        try:
            found.append(ProcessRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError, OSError):
            path.unlink(missing_ok=True)  # unreadable: nothing can be learnt from it
    return found


def forget(home: Home, flow_run_id: str) -> None:
    (folder(home) / f"{flow_run_id}.json").unlink(missing_ok=True)


LEGACY_EPOCH = 1e9  # larger start times are psutil create_times (epoch seconds), not uptimes
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def started_at(pid: int) -> float:
    """When process ``pid`` started: what tells it from a later process given the same pid.

    Seconds since boot, from /proc on Linux. psutil's ``create_time`` adds the boot time, which
    the kernel moves whenever the wall clock is stepped (NTP, a VM resumed after a pause): in
    CI a step of a second or more made every running process look like another one, so
    ``loraflow down`` stopped nothing and training children stopped themselves as orphans.
    Elsewhere (no /proc) it is ``create_time``. Raises psutil.NoSuchProcess for no such pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            raise psutil.NoSuchProcess(pid) from None
        return psutil.Process(pid).create_time()
    fields = stat[stat.rindex(b")") + 2 :].split()  # the name in (...) may hold spaces
    return int(fields[19]) / CLOCK_TICKS  # field 22 of proc(5): starttime, in clock ticks


def alive(pid: int, started: float) -> bool:
    """Is process ``pid`` still the one that started at ``started`` (``started_at``)?"""
    try:
        if started >= LEGACY_EPOCH:  # recorded by an older loraflow (a stack.json left running)
            return abs(psutil.Process(pid).create_time() - started) < 1.0
        return abs(started_at(pid) - started) < 0.05
    except (psutil.Error, ValueError, IndexError, OSError):
        return False


def is_alive(record: ProcessRecord) -> bool | None:
    """True/False on this host; None for a process on another host (cannot tell from here)."""
    return alive(record.pid, record.started) if record.local else None


def parent_marker() -> str:
    """What a child process is told about the process it must not outlive."""
    pid = os.getpid()
    return f"{pid}:{started_at(pid)}"


def parent_alive(marker: str) -> bool:
    pid, _, started = marker.partition(":")
    try:
        return alive(int(pid), float(started))
    except ValueError:
        return True  # no usable marker: do not stop anything


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def skip_final_collections() -> None:
    """At exit, skip the interpreter's last garbage collections over everything torch,
    transformers and MLflow loaded: measured ~2 s of every training process's and CLI's exit,
    with nothing left to run (files are flushed and atexit handlers still run; objects in
    reference cycles are simply not collected, as the process ends anyway)."""
    import atexit
    import gc

    def freeze() -> None:
        gc.disable()
        gc.freeze()

    atexit.register(freeze)
