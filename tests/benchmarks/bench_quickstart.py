"""Benchmark: this checkout's first-run quickstart against a baseline checkout, interleaved.

    .venv/bin/python tests/benchmarks/bench_quickstart.py --baseline /path/to/other/checkout [--pairs N]

The baseline is another checkout with its own ``.venv`` (for example a clone of the previous
main). Each pair runs ``loraflow quickstart`` on a fresh ``LORAFLOW_HOME`` in the baseline, then
in this checkout, so both see the same load of a shared machine. Per run it prints the CLI's
time line (wall = training + evaluation + overhead) and, from the run's Prefect database, the
evaluate task's duration and the fine-tune stage's time from its start to the training's
launch; then the medians and the ratios this/baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIME_LINE = re.compile(
    r"wall (?P<wall>[\d.]+) s = training (?P<training>[\d.]+) s \+ evaluation "
    r"(?P<evaluation>[\d.]+) s \+ pipeline overhead (?P<overhead>-?[\d.]+) s"
)


def _stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def stage_figures(home: Path) -> dict[str, float]:
    """The evaluate task's seconds and the fine-tune stage's start-to-launch seconds."""
    db = sqlite3.connect(home / "prefect" / "prefect.db")
    rows = db.execute("select name, start_time, end_time from task_run").fetchall()
    spans = {name.split(" ")[0]: (_stamp(a), _stamp(b)) for name, a, b in rows if a and b}
    figures = {}
    if "evaluate" in spans:
        figures["evaluate_task"] = spans["evaluate"][1] - spans["evaluate"][0]
    jobs = list((home / "work" / "training").glob("*/job.json"))
    if "fine-tune" in spans and jobs:
        figures["launch"] = jobs[0].stat().st_mtime - spans["fine-tune"][0]
    return figures


def quickstart(tree: Path) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    env = {**os.environ, "LORAFLOW_HOME": str(home)}
    started = time.monotonic()
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "loraflow"), "quickstart"],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    found = TIME_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"quickstart in {tree} failed ({done.returncode}):\n{done.stdout[-2000:]}")
    figures = {k: float(v) for k, v in found.groupdict().items()}
    figures["command"] = seconds
    return figures | stage_figures(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout with a .venv")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved runs per tree")
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this": REPO}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for pair in range(1, args.pairs + 1):
        for name, tree in trees.items():
            figures = quickstart(tree)
            runs[name].append(figures)
            ratio = figures["evaluation"] / figures["training"]
            print(
                f"pair {pair} {name:8s} wall {figures['wall']:.1f} s = training "
                f"{figures['training']:.1f} + evaluation {figures['evaluation']:.1f} + overhead "
                f"{figures['overhead']:.1f}; evaluation/training {ratio:.2f}; evaluate task "
                f"{figures.get('evaluate_task', 0):.1f} s; stage start to launch "
                f"{figures.get('launch', 0):.1f} s",
                flush=True,
            )
    keys = ("wall", "training", "evaluation", "overhead", "evaluate_task", "launch")
    median = {
        n: {k: statistics.median(r.get(k, 0) for r in rs) for k in keys} for n, rs in runs.items()
    }
    for key in keys:
        base, this = median["baseline"][key], median["this"][key]
        ratio = f"x{this / base:.2f}" if base else "-"
        print(f"median {key:13s} baseline {base:6.1f} s  this {this:6.1f} s  this/baseline {ratio}")
    for name in trees:
        m = median[name]
        print(f"median evaluation/training {name}: {m['evaluation'] / m['training']:.2f}")


if __name__ == "__main__":
    main()
