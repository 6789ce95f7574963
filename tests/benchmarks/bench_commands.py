"""Benchmark: a command that needs Prefect, here against a baseline checkout, interleaved.

    .venv/bin/python tests/benchmarks/bench_commands.py --baseline /path/to/other/checkout [--runs N]

Each round runs ``loraflow status`` (the command that only reads: the flow runs from Prefect,
the models from MLflow) on a fresh ``LORAFLOW_HOME`` in the baseline's checkout, then in this
one, so both see the same load of a shared machine. With no server running, the command needs
one of its own: Prefect's ephemeral server in checkouts before 2026-12-02, loraflow's
temporary server since (``flows/cli/prefect_api.py``). Prints each run's wall and CPU seconds
(the command and the server it started and stopped), the medians and the ratios
this/baseline. ``--this-only`` measures this checkout alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def status_run(tree: Path) -> dict[str, float]:
    """``loraflow status`` on a fresh home: its wall and CPU seconds, its server's included."""
    home = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["LORAFLOW_HOME"] = str(home)
    cpu, started = children_cpu(), time.monotonic()
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "loraflow"), "status"],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall, cpu = time.monotonic() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{tree}: loraflow status exited {done.returncode}:\n"
                         f"{done.stderr[-2000:]}")  # fmt: skip
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--this-only", action="store_true")
    args = parser.parse_args()
    trees = {"this": REPO}
    if not args.this_only:
        if args.baseline is None:
            parser.error("--baseline is required (or --this-only)")
        trees = {"baseline": args.baseline.resolve(), "this": REPO}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for index in range(args.runs):
        for name, tree in trees.items():
            figures = status_run(tree)
            results[name].append(figures)
            print(f"run {index + 1} {name:8s} wall {figures['wall']:6.2f} s  "
                  f"cpu {figures['cpu']:6.2f} s", flush=True)  # fmt: skip
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu")}
        for name, runs in results.items()
    }
    for name, figures in medians.items():
        print(f"median {name:8s} wall {figures['wall']:6.2f} s  cpu {figures['cpu']:6.2f} s")
    if "baseline" in medians:
        for key in ("wall", "cpu"):
            ratio = medians["this"][key] / medians["baseline"][key]
            print(f"ratio this/baseline {key}: x{ratio:.2f}")


if __name__ == "__main__":
    main()
