"""requirements.lock: the one dependency set the README's commands, CI and the images install.

Checked offline against pyproject.toml (every requirement, every extra, satisfied by its pin;
the caps that keep Prefect and MLflow working) and against this environment (installed from
the lock, nothing drifted, ``pip check`` clean). ``make lock`` (infra/lock.py) rewrites it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

LOCK = REPO / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PIN = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)==([0-9][^\s+;]*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    pins = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not a canonical `name==version` pin without local label: {line!r}"
        name, version = match.groups()
        assert name not in pins, f"{name} pinned twice"
        pins[name] = version
    return pins


def project_requirements() -> list[Requirement]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return [
        Requirement(r)
        for r in PYPROJECT["project"]["dependencies"] + [r for rs in extras.values() for r in rs]
    ]


def test_lock_pins_each_package_once():
    pins = locked()
    assert len(pins) > 100 and "pip" in pins and "loraflow" not in pins
    assert LOCK.read_text().startswith("# requirements.lock: every package loraflow installs")


def test_every_requirement_of_pyproject_and_its_extras_is_locked_and_satisfied():
    pins = locked()
    missing = [str(r) for r in project_requirements() if canonical(r.name) not in pins]
    assert missing == [], f"not in the lock (run `make lock`): {missing}"
    unsatisfied = [
        f"{r} (locked {pins[canonical(r.name)]})"
        for r in project_requirements()
        if not r.specifier.contains(pins[canonical(r.name)], prereleases=True)
    ]
    assert unsatisfied == [], (
        f"pyproject.toml and the lock disagree (run `make lock`): {unsatisfied}"
    )


def test_caps_that_keep_prefect_and_mlflow_working():
    required = {canonical(r.name): r for r in project_requirements()}
    # Prefect 3.8's scheduler fails on every cycle with SQLAlchemy 2.1 (tests/ops/test_scheduler.py);
    # its server answers 422 to its own client from FastAPI 0.151 on.
    for name, broken in {"sqlalchemy": "2.1.0", "fastapi": "0.151.0"}.items():
        assert not required[name].specifier.contains(broken), f"{name} {broken} is not capped"
    pins = locked()
    assert Version(pins["sqlalchemy"]) < Version("2.1")
    assert Version(pins["fastapi"]) < Version("0.151")
    assert Version(pins["prefect"]).release[:2] == (3, 8)
    assert Version(pins["mlflow"]).major == 3
    # The one torch pin (CPU and CUDA builds both match it: no local label).
    assert f"torch=={pins['torch']}" in PYPROJECT["project"]["dependencies"]


def test_this_environment_is_installed_from_the_lock():
    """Every installed package the lock names has the locked version, and every package the
    project pulls in (with the dev extra, as `make test` installs it) is in the lock."""
    pins = locked()
    installed = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    drifted = sorted(
        f"{name} {dist.version} (locked {pins[name]})"
        for name, dist in installed.items()
        if name in pins and Version(dist.version).public != pins[name]
    )
    assert drifted == [], (
        f"installed versions differ from requirements.lock: {drifted}; "
        'reinstall with: pip install -c requirements.lock -e ".[dev]"'
    )
    # Walk the installed dependency tree of loraflow[dev]: nothing outside the lock.
    seen, todo, unlocked = set(), [("loraflow", ("dev",))], []
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for raw in installed[name].requires or []:
            requirement = Requirement(raw)
            env = [{"extra": e} for e in ("", *extras)]
            if requirement.marker and not any(requirement.marker.evaluate(e) for e in env):
                continue
            dependency = canonical(requirement.name)
            if dependency not in pins:
                unlocked.append(f"{name} -> {raw}")
            if dependency in installed:
                todo.append((dependency, tuple(sorted(requirement.extras))))
    assert unlocked == [], f"installed dependencies the lock lacks (run `make lock`): {unlocked}"


def test_pip_check_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
