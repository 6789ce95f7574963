"""A flow run's own cost on the temporary server, with and without flow-run heartbeats.

`loraflow run` on its temporary server turns Prefect's flow-run heartbeats off
(``temp_server.without_heartbeats``): their thread sleeps in 1 s ticks and is joined when the
flow ends. This runs a one-task flow against one temporary server, alternating the two
settings, and prints the medians and their ratio (interleaved: the machine's load hits both).

    .venv/bin/python tests/benchmarks/bench_flow_exit.py --runs 10
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="Flow runs of each setting.")
    args = parser.parse_args()

    import os

    os.environ["LORAFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-flow-exit-")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from tasks.core.home import apply_env

    home = apply_env()  # a new home, seeded from the database templates
    from flows.cli.temp_server import TemporaryServer, without_heartbeats

    server = TemporaryServer(home.prefect_home / "temporary-server.log").start()
    server.wait()
    from prefect import flow, task

    @task
    def one() -> int:
        return 1

    @flow
    def tiny() -> int:
        return one()

    tiny()  # the first run creates the flow and warms the client
    seconds: dict[str, list[float]] = {"heartbeats (Prefect's default)": [], "without": []}
    for _ in range(args.runs):
        for name, settings in (
            ("heartbeats (Prefect's default)", contextlib.nullcontext()),
            ("without", without_heartbeats()),
        ):
            with settings:
                started = time.perf_counter()
                tiny()
                seconds[name].append(time.perf_counter() - started)
    server.stop()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"{name:32s} median {medians[name]:.3f} s  ({' '.join(f'{v:.2f}' for v in values)})")
    base, new = medians.values()
    print(f"without/with: x{new / base:.2f} ({base - new:+.3f} s per flow run)")


if __name__ == "__main__":
    main()
