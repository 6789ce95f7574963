"""Benchmark: the temporary Prefect server's start on a seeded home, with and without
registering Prefect's block types (the template holds them: tasks/core/ops/templates.py).

    .venv/bin/python tests/benchmarks/bench_server_start.py [--runs N]

Each run seeds a fresh home from this environment's Prefect template (and its block
record), starts `run`'s temporary server on it (``flows/cli/temp_server.py``) and times it to
``/api/health``; the server's own CPU is read before it stops. The two ways are
interleaved, so both see the same load of a shared machine; it prints each run, the medians
and the ratios (not registering / registering).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from flows.cli.temp_server import TemporaryServer  # noqa: E402
from tasks.core.ops.templates import seed_databases  # noqa: E402


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_once(register_blocks: bool) -> tuple[float, float]:
    """(seconds to ready, CPU seconds of the server) on a freshly seeded home."""
    home = Path(tempfile.mkdtemp(prefix="bench-server-"))
    database = home / "prefect" / "prefect.db"
    if seed_databases(database, None, home / "artifacts") != ["prefect"]:
        raise SystemExit("no Prefect template: run `make` (python -m tasks.core.ops.templates)")
    saved = dict(os.environ)
    for name in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[name]
    os.environ.update(PREFECT_HOME=str(database.parent), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = TemporaryServer(home / "server.log", register_blocks=register_blocks)
    try:
        started = time.monotonic()
        server.start().wait()
        ready = time.monotonic() - started
        cpu = cpu_seconds(server.process.pid)
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)
    return ready, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each way")
    args = parser.parse_args()
    ways = {"registering": True, "not registering": False}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for run in range(1, args.runs + 1):
        for name, register in ways.items():
            ready, cpu = start_once(register)
            runs[name].append((ready, cpu))
            print(f"run {run} {name:16s} ready {ready:5.2f} s, server CPU {cpu:5.2f} s", flush=True)
    medians = {
        name: [statistics.median(r[i] for r in rs) for i in (0, 1)] for name, rs in runs.items()
    }
    for i, what in enumerate(("ready", "server CPU")):
        base, this = medians["registering"][i], medians["not registering"][i]
        print(f"median {what:10s} registering {base:5.2f} s  not {this:5.2f} s  x{this / base:.2f}")


if __name__ == "__main__":
    main()
