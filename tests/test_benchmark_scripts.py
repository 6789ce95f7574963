"""The benchmark scripts under tests/benchmarks/ stay runnable: each imports and answers --help.

They are run by hand (ratios against a baseline, never timed tests), so nothing else would
notice a script broken by a renamed function or a moved module.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "tests" / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks():
    assert {p.stem for p in SCRIPTS} >= {"bench_training", "bench_serving", "bench_quickstart"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_script_answers_help(script):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
