"""Processes that loaded torch skip the interpreter's final garbage collections at exit
(tasks/core/ops/processes.py): about 2 s of every training process's and CLI's exit."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import atexit, gc, sys
atexit.register(lambda: print(f"gc enabled {gc.isenabled()}, frozen {gc.get_freeze_count() > 0}"))
from tasks.core.ops.processes import skip_final_collections
skip_final_collections()
out = open(sys.argv[1], "w")
out.write("written before exit")  # never closed by hand: exit still flushes it
atexit.register(lambda: print("atexit handlers still run"))
"""


def test_exit_freezes_the_heap_after_the_other_handlers_and_still_flushes(tmp_path):
    target = tmp_path / "out.txt"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "atexit handlers still run",
        "gc enabled False, frozen True",
    ]
    assert target.read_text() == "written before exit"


def test_the_cli_and_the_training_child_skip_them():
    for path in ("flows/cli/app.py", "tasks/core/training/launcher.py"):
        assert "skip_final_collections()" in (REPO / path).read_text(), path
