"""Every module imports and stays short (that tasks.core never pulls in Prefect: see
test_architecture.py, which imports it in a fresh interpreter)."""

from __future__ import annotations

import importlib

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


def test_no_module_is_too_long():
    for module in MODULES:
        path = REPO / (module.replace(".", "/") + ".py")
        assert len(path.read_text().splitlines()) <= 500, module
