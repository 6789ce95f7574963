"""Operations tests: real servers, a real worker, real PostgreSQL, a real browser.

Binaries that pip cannot install (PostgreSQL, Chromium, chromedriver) come from Debian
packages that ``.ci/run`` installs. Locally a test that needs a missing one is skipped with
the reason; under ``CI=true`` the same absence is a failure, so CI can never pass by skipping.

One stack serves the up/deploy tests and the browser test: ``loraflow up --detach`` on a
fresh state home, the tiny experiment deployed and run once through the worker; torn down
with ``loraflow down``, which must leave no process behind.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.core.home import Home
from tasks.core.ops import stack as plan
from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO, mirrored, write_config  # noqa: F401 (fixture)

BIN = Path(sys.executable).parent
CRON = "0 3 * * 1"
SCHEDULER_LOOP_SECONDS = 2


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# The stack and the PostgreSQL cluster outlive the commands that start them (that is what
# --detach and pg_ctl are for). If this session is ended with SIGTERM (a `timeout`, a CI
# cancel), turn it into an interrupt so pytest still runs the finalizers that stop them.
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _interrupt)


def require(path: str | None, what: str) -> str:
    """``path`` if it exists; else skip (locally) or fail (CI=true) naming the package."""
    if path and Path(path).exists():
        return path
    message = f"{what} not installed (Debian: apt-get install -y {what.split()[0]})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}: .ci/run must install it", pytrace=False)
    pytest.skip(message)


def run(
    args: list[str], env: dict[str, str], timeout: float = 240, stdin: str | None = None
) -> str:
    """Run a command to completion; its combined output, or a failure that shows it."""
    started = time.monotonic()
    done = subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        input=stdin,
    )  # fmt: skip
    print(f"[{time.monotonic() - started:5.1f} s] {' '.join(Path(a).name for a in args[:3])}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def new_home(root: Path, template_db: Path, tiny_bert_dir: Path) -> Home:
    """A state home with a migrated MLflow DB and the tiny BERT in its mirror."""
    from tasks.core.catalog.mirror import import_folder

    home = Home(root).ensure()
    shutil.copyfile(template_db, home.mlflow_db)
    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    return home


def stack_env(home: Home, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(home.env())
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{home.mlflow_db}",
        MLFLOW_REGISTRY_URI=f"sqlite:///{home.mlflow_db}",
        PREFECT_WORKER_QUERY_SECONDS="1",  # pick up runs at once, not every 10 s
        # The server's scheduler service every 2 s instead of 60 s: tests/ops/test_scheduler.py
        # waits for the runs it creates.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=str(SCHEDULER_LOOP_SECONDS),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Stack:
    home: Home
    config: Path
    env: dict[str, str]
    urls: plan.StackUrls
    up_output: str
    deploy_output: str
    flow_run_id: str  # the run started with `prefect deployment run`, completed

    @property
    def api(self) -> str:
        return self.urls.prefect_api


# Teardowns of session fixtures to run as soon as the last test using them has run (see
# pytest_runtest_teardown), keyed by fixture name.
EARLY_TEARDOWN: dict[str, Callable[[], None]] = {}


def pytest_runtest_teardown(item, nextitem):
    """Stop the stack once no next test uses it: its Prefect server's services (the scheduler
    every 2 s), worker and MLflow server took ~0.13 of a core for the rest of a session
    (measured: ~115 CPU-s of a ~1,200 s suite). The tests using it are ordered together
    (``tests/conftest.py``), so nothing asks for it again."""
    for name in list(EARLY_TEARDOWN):
        if name in item.fixturenames and (nextitem is None or name not in nextitem.fixturenames):
            EARLY_TEARDOWN.pop(name)()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, mlflow_template_db, tiny_bert_dir):
    root = tmp_path_factory.mktemp("stack")
    home = new_home(root / "home", mlflow_template_db, tiny_bert_dir)
    config = write_config(root, schedule={"cron": CRON, "timezone": "UTC"})
    env = stack_env(home)
    ports = [plan.free_port(), plan.free_port()]
    urls = plan.urls(plan.DEFAULT_HOST, *ports)
    up = [str(BIN / "loraflow"), "up", "--detach", "--prefect-port", str(ports[0])]
    up += ["--mlflow-port", str(ports[1])]
    EARLY_TEARDOWN["stack"] = lambda: _stack_down(home, env)
    try:
        up_output = run(up, env)
        deploy_output = run([str(BIN / "loraflow"), "deploy", str(config)], env)
        env_api = {**env, "PREFECT_API_URL": urls.prefect_api}
        started = run(
            [str(BIN / "prefect"), "deployment", "run", "finetune/tiny-test", "--watch"]
            + ["--watch-timeout", "300"],
            env_api,
            timeout=330,
        )
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
        yield Stack(home, config, env, urls, up_output, deploy_output, flow_run_id)
    finally:
        down = EARLY_TEARDOWN.pop("stack", None)  # None: stopped after its last test
        if down is not None:
            down()


def _stack_down(home: Home, env: dict[str, str]) -> None:
    """``loraflow down``, which must leave no process of the stack running."""
    state = plan.read_state(home)
    subprocess.run([str(BIN / "loraflow"), "down"], env=env, timeout=120, check=False)
    left = [p for p in (state.processes if state else ()) if _running(p.pid)]
    for p in left:  # never leave a process behind, even when `down` is broken
        os.killpg(p.pid, 9)
    assert not left, f"loraflow down left processes running: {left}"


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- PostgreSQL: a throwaway cluster per session ----------------------------------------------


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str = "loraflow"

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"


def _pg_bindir() -> str | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return str(Path(found[-1]).parent)
    which = shutil.which("pg_ctl")
    return str(Path(which).parent) if which else None


@pytest.fixture(scope="session")
def postgres():
    bindir = _pg_bindir()
    require(bindir and str(Path(bindir) / "initdb"), "postgresql server binaries (initdb)")
    import psycopg2

    # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user,
    # in a directory it can reach (pytest's tmp dirs are private to root).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="loraflow-pg-"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data, log, port = root / "data", root / "server.log", plan.free_port()
    pg = Postgres(port)
    options = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        [*as_user, f"{bindir}/initdb", "-D", str(data), "-U", pg.user, "--auth=trust"]
        + ["-E", "UTF8", "--locale=C", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg_ctl = [*as_user, f"{bindir}/pg_ctl", "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        connection = psycopg2.connect(pg.url("postgres"))
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE prefect")
            cursor.execute("CREATE DATABASE mlflow")
        connection.close()
        yield pg
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
