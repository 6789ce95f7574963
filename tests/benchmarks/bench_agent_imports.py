"""Benchmark: the training agent's imports, fresh against forked from `loraflow run`.

Each side runs in its own fresh process and times (CPU, ``getrusage``) what the agent
imports before it forks its ranks (``agent.PRELOAD``): in a fresh interpreter, and after the
imports `run` has done when it forks the agent (its stages, ``FIRST_STAGES``). Interleaved;
prints the medians and their ratio.

    .venv/bin/python tests/benchmarks/bench_agent_imports.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from tasks.core.home import REPO_ROOT

MEASURE = """
import resource, sys
from tasks.core.home import apply_env
apply_env()
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
if sys.argv[1] == "forked":
    import flows.cli.app, flows.cli.pipeline, flows.finetune, flows.cli.reconcile
    from flows.cli.pipeline import FIRST_STAGES
    from tasks.core.ops.preload import load
    for step in FIRST_STAGES:
        load(step)
from tasks.core.ops.preload import load
from tasks.core.training.agent import ENTRY, PRELOAD
start = cpu()
load(ENTRY)
for step in PRELOAD:
    load(step)
print(cpu() - start)
"""


def measure(side: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, side],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    fresh, forked = [], []
    for run in range(1, args.runs + 1):
        fresh.append(measure("fresh"))
        forked.append(measure("forked"))
        print(f"run {run}: fresh agent {fresh[-1]:.2f} s CPU, forked {forked[-1]:.2f} s CPU")
    a, b = statistics.median(fresh), statistics.median(forked)
    print(f"median fresh {a:.2f} s, forked {b:.2f} s: forked/fresh x{b / a:.2f}")


if __name__ == "__main__":
    main()
