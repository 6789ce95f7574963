"""Imports done ahead (tasks/core/ops/preload.py): a step imports a module or calls a
function of one; in the background a failing step is skipped and the next still runs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tasks.core.ops.preload import in_background, load, settle
from tests.conftest import REPO

CALLS: list[str] = []


def bump() -> None:
    CALLS.append("bump")


def slow_bump() -> None:
    time.sleep(0.5)
    CALLS.append("slow")


def test_a_step_imports_a_module_or_calls_its_function():
    CALLS.clear()
    load("tests.unit.test_preload:bump")
    load("colorsys")
    assert CALLS == ["bump"] and "colorsys" in sys.modules
    with pytest.raises(ModuleNotFoundError):
        load("no_such_module_here")


def test_in_the_background_a_failing_step_is_skipped():
    CALLS.clear()
    thread = in_background("preload-test", "no_such_module_here", "tests.unit.test_preload:bump")
    thread.join(timeout=30)
    assert thread.name == "preload-test" and thread.daemon
    assert CALLS == ["bump"]


def test_settle_waits_for_every_preload_but_the_callers_own():
    CALLS.clear()
    first = in_background("preload-test-1", "tests.unit.test_preload:slow_bump")
    second = in_background("preload-test-2", "tests.unit.test_preload:slow_bump")
    settle()
    assert not first.is_alive() and not second.is_alive() and CALLS == ["slow", "slow"]
    inside = in_background("preload-test-3", "tests.unit.test_preload:settle")
    inside.join(timeout=30)
    assert not inside.is_alive()  # it did not wait for itself


RACE = """
import sys
from tasks.core.config.data import SplitSpec
from tasks.core.data.loading import load_split
from tasks.core.ops.preload import in_background, settle

in_background("preload-evaluation", "transformers.models.auto.tokenization_auto")
settle()  # what a stage beside a preload does before it imports
spec = SplitSpec(path=sys.argv[1], text_column="sentence", label_column="label")
print(len(load_split(spec)))
"""


def test_data_read_right_after_a_settled_transformers_preload_is_read(tmp_path):
    """A fresh process (transformers not imported yet): `datasets` reads a file right after
    a preload started. Without ``settle`` it failed: 'module transformers has no attribute
    PreTrainedTokenizerBase' (datasets' hashing, transformers half imported by the thread)."""
    from tests.tiny import sentiment_rows, write_tsv

    data = write_tsv(tmp_path / "train.tsv", "sentence", sentiment_rows(8, seed=1))
    env = {"HF_DATASETS_CACHE": str(tmp_path / "datasets"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", RACE, str(data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.split()[-1] == "8", done.stderr[-2000:]


def declared_steps() -> list[str]:
    from flows.cli.pipeline import FIRST_STAGES
    from tasks.core.training.agent import PRELOAD, PRELOAD_WHILE_IDLE
    from tasks.train import EVALUATION_STEPS

    return [*FIRST_STAGES, *PRELOAD, *PRELOAD_WHILE_IDLE, *EVALUATION_STEPS]


@pytest.mark.parametrize("step", declared_steps())
def test_every_declared_step_names_what_is_installed(step):
    """A step that names nothing is skipped in silence in the background: a renamed module
    or function (a private one of MLflow's, say) must fail here instead."""
    import importlib
    import importlib.util

    module, _, function = step.partition(":")
    assert importlib.util.find_spec(module) is not None, step
    if function:
        assert callable(getattr(importlib.import_module(module), function, None)), step
