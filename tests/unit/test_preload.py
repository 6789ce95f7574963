"""Imports done ahead (tasks/core/ops/preload.py): a step imports a module or calls a
function of one; in the background a failing step is skipped and the next still runs."""

from __future__ import annotations

import sys

import pytest

from tasks.core.ops.preload import in_background, load

CALLS: list[str] = []


def bump() -> None:
    CALLS.append("bump")


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
