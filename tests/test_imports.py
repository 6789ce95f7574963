"""Every module imports, and the pure-logic layer never pulls in Prefect."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

MODULES = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for package in ("flows", "tasks")
    for path in (REPO / package).rglob("*.py")
    if path.name != "__init__.py"
)
CORE = [m for m in MODULES if m.startswith("tasks.core.")]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)


def test_core_modules_do_not_import_prefect():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"tasks.core imports prefect via: {out.stdout.strip()}"


def test_no_module_is_too_long():
    for module in MODULES:
        path = REPO / (module.replace(".", "/") + ".py")
        assert len(path.read_text().splitlines()) <= 500, module
