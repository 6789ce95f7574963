"""The tree reads as the pipeline: stage packages, no import loop, one error hierarchy."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_imports import CORE as CORE_MODULES
from tests.test_imports import MODULES

CORE = REPO / "tasks/core"
SHARED_MODULES = {"discovery", "digests", "errors", "home", "tracking"}
STAGE_PACKAGES = {
    "audit", "catalog", "config", "data", "evaluation", "ops", "promotion", "registry",
    "monitoring", "security", "serving", "training",
}  # fmt: skip


def test_tasks_core_holds_stage_packages_and_a_handful_of_shared_modules():
    modules = {p.stem for p in CORE.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == SHARED_MODULES
    assert packages == STAGE_PACKAGES
    for package in packages:  # each names what its modules hold
        doc = ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text())) or ""
        stems = {p.stem for p in (CORE / package).glob("*.py") if p.name != "__init__.py"}
        missing = [stem for stem in stems if f"``{stem}``" not in doc]
        assert not missing, f"tasks/core/{package}/__init__.py does not name {missing}"


def imports_of(module: str) -> set[str]:
    """Every project module ``module`` imports, at module level or inside functions."""
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in ALL else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in ALL and m != module}


ALL = set(MODULES) | {
    ".".join(p.relative_to(REPO).parent.parts)
    for package in ("flows", "tasks")
    for p in (REPO / package).rglob("__init__.py")
}


def test_no_import_loop_between_modules():
    graph = {module: imports_of(module) for module in ALL}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                loop = path[path.index(target) :] + [target] if target in path else [target]
                pytest.fail(f"import loop: {' -> '.join(loop)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


# One interpreter imports the heavy third-party libraries once, then forks a child per stage
# package (and one for all of tasks.core): each child starts with no loraflow module and no
# Prefect loaded, as a fresh interpreter would, and the suite pays torch's import once instead
# of thirteen times (~45 s of a worker's time). Each child reports its traceback ("" if none)
# and the Prefect modules its imports pulled in.
_FORK_EACH = """
import importlib, json, os, sys, traceback
for lib in ("torch", "transformers", "datasets", "peft", "mlflow", "pydantic", "numpy"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not [m for m in sys.modules if m == "tasks" or m.startswith(("tasks.", "flows"))]
assert not [m for m in sys.modules if m == "prefect" or m.startswith("prefect.")]
results = {}
for package, modules in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            for m in modules:
                importlib.import_module(m)
            message = ""
        except BaseException:
            message = traceback.format_exc()[-2000:]
        leaked = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
        os.write(write, json.dumps({"error": message, "prefect": leaked}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        results[package] = json.loads(pipe.read().decode())
    os.waitpid(pid, 0)
print(json.dumps(results))
"""
WHOLE_CORE = "tasks.core"


@pytest.fixture(scope="module")
def imported() -> dict[str, dict]:
    """Per stage package (and for the whole of tasks.core), what importing its modules in file
    order in a fresh interpreter gave: ``error`` (a traceback, "" if none) and ``prefect``."""
    wanted = {
        package: sorted(m for m in MODULES if m.startswith(f"tasks.core.{package}."))
        for package in sorted(STAGE_PACKAGES)
    }
    wanted[WHOLE_CORE] = CORE_MODULES
    done = subprocess.run(
        [sys.executable, "-c", _FORK_EACH, json.dumps(wanted)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", sorted(STAGE_PACKAGES))
def test_each_stage_package_imports_alone(package, imported):
    """A fresh interpreter imports the package and its modules in file order: no hidden order."""
    assert imported[package]["error"] == ""


def test_core_modules_do_not_import_prefect(imported):
    """The pure-logic layer never pulls in Prefect, whichever part of it is imported."""
    assert imported[WHOLE_CORE]["error"] == ""
    leaks = {package: got["prefect"] for package, got in imported.items() if got["prefect"]}
    assert leaks == {}, (
        f"tasks.core imports prefect, e.g.: { {k: v[:3] for k, v in leaks.items()} }"
    )


def test_every_error_class_derives_from_the_one_base():
    import importlib

    from tasks.core.errors import LoraflowError

    strays = []
    for module in MODULES:
        for name, obj in vars(importlib.import_module(module)).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module
                and not issubclass(obj, LoraflowError)
            ):
                strays.append(f"{module}.{name}")
    assert strays == []


def test_tasks_the_flows_submit_declare_no_timeout():
    """A submitted task runs in a worker thread, where Prefect cannot interrupt it: a timeout
    there only made Prefect print a warning into every quickstart's output."""
    import importlib

    submitted = []
    for path in sorted((REPO / "flows").rglob("*.py")):
        module = None
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.func if isinstance(node, ast.Call) else None
            named = isinstance(call, ast.Attribute) and isinstance(call.value, ast.Name)
            if named and call.attr == "submit":
                dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
                module = module or importlib.import_module(dotted)
                submitted.append((dotted, getattr(module, call.value.id)))
    assert submitted, "no submitted task found: the check looks at nothing"
    for where, task in submitted:
        assert task.timeout_seconds is None, f"{where}: {task.name} has a timeout"
