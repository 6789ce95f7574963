"""``loraflow up`` / ``down``: the local stack (``deploy`` and ``emit-event``: ``deploy.py``).

``up`` runs what Prefect and MLflow users already run by hand (``prefect server start``,
``mlflow server``, ``prefect worker start``) as child processes on the embedded state, waits
until each answers, and stops them all on Ctrl-C or ``loraflow down``. The plan (argv, env,
ports, URLs) comes from ``tasks.core.ops.stack``; this module only starts, watches and stops.
With ``--secrets FILE`` every server authenticates (``tasks.core.ops.auth``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.output import console, err, warning_line
from tasks.core.errors import EXIT_BAD_INPUT, BadInput, StackError
from tasks.core.home import REPO_ROOT, Home, apply_env
from tasks.core.ops import processes, stack
from tasks.core.ops.auth import LOOPBACK, StackAuth, redact_uri
from tasks.core.security import accounts

# -- processes ------------------------------------------------------------------------------


def _start(spec: stack.ProcessSpec, cwd: Path) -> subprocess.Popen:
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with spec.log.open("ab") as log:
        # A session of its own: Ctrl-C in the terminal reaches ``up`` only, which then stops
        # the children in order; and a detached stack outlives the command that started it.
        return subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(path: Path | str, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_http(spec: stack.ProcessSpec, proc: subprocess.Popen, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{spec.name} exited with {proc.returncode}", spec.log)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(spec.health_url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise StackError(f"{spec.name} did not answer {spec.health_url} in time", spec.log)


def stack_secrets(home: Home) -> dict[str, str]:
    """The secrets file of the stack running on this home ({} for an embedded stack)."""
    from tasks.core.security import envfile

    state = stack.read_state(home)
    return envfile.read(Path(state.secrets)) if state and state.secrets else {}


def use_stack_credentials(home: Home) -> None:
    """Give this process the Prefect API's auth string of the stack on this home, unless the
    environment already names one (call before Prefect is imported)."""
    if not os.environ.get("PREFECT_API_AUTH_STRING"):
        auth = stack_secrets(home).get("PREFECT_AUTH_STRING")
        if auth:
            os.environ["PREFECT_API_AUTH_STRING"] = auth


def prefect_client(api: str, auth: str | None = None):
    """A sync Prefect client on ``api``, whatever settings this process was started with;
    ``auth``: the server's basic-auth string (default: ``PREFECT_API_AUTH_STRING``)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    auth = auth or os.environ.get("PREFECT_API_AUTH_STRING")
    updates = {PREFECT_API_URL: api} | ({PREFECT_API_AUTH_STRING: auth} if auth else {})

    @contextlib.contextmanager
    def opened():
        with temporary_settings(updates), get_client(sync_client=True) as client:
            yield client

    return opened()


def ensure_pools(api: str, pools: tuple[str, ...] = stack.POOLS, auth: str | None = None) -> None:
    """Create the process work pools that are missing; existing pools are left as they are."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with prefect_client(api, auth) as client:
        for pool in pools:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(
                    WorkPoolCreate(
                        name=pool,
                        type="process",
                        base_job_template=template,
                        description=f"loraflow {pool} pool (local process worker)",
                    )
                )


def _wait_worker(api: str, pool: str, proc: subprocess.Popen, log: Path, deadline: float, auth):
    name = stack.worker_name(pool)
    with prefect_client(api, auth) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"worker-{pool} exited with {proc.returncode}", log)
            workers = client.read_workers_for_work_pool(pool, offset=0, limit=50)
            if any(
                w.name == name and str(getattr(w.status, "value", w.status)) == "ONLINE"
                for w in workers
            ):
                return
            time.sleep(0.5)
    raise StackError(f"worker-{pool} did not come online in time", log)


def alive(started: stack.Started) -> bool:
    """Whether the process ``up`` started still runs (its pid not reused by another)."""
    return processes.alive(started.pid, started.started)


def _stop(started: stack.Started, grace: float = 15.0) -> bool:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` s; True if it ran."""
    if not alive(started):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(started):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(started.pid, os.WNOHANG)  # reap our own child so it stops existing
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(started.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(started.pid, 0)
    return True


def stop_all(processes: tuple[stack.Started, ...]) -> list[str]:
    """Stop in reverse start order (workers before the servers they report to)."""
    return [f"{p.name} (pid {p.pid})" for p in reversed(processes) if _stop(p)]


def _started(spec: stack.ProcessSpec, proc: subprocess.Popen) -> stack.Started:
    return stack.Started(spec.name, proc.pid, processes.started_at(proc.pid), str(spec.log))


def start_stack(
    home: Home,
    *,
    host: str,
    prefect_port: int,
    mlflow_port: int,
    pools: tuple[str, ...],
    timeout: float,
    auth: StackAuth | None = None,
) -> stack.StackState:
    """Start servers, create pools, start workers; on any failure stop what was started."""
    urls, specs = stack.plan(
        home, sys.executable, host=host, prefect_port=prefect_port,
        mlflow_port=mlflow_port, pools=pools, auth=auth,
    )  # fmt: skip
    if auth is not None:
        auth.auth_ini(home).write_text(accounts.auth_ini(auth.auth_db(home)))
    for port in (prefect_port, mlflow_port if urls.mlflow else None):
        if port and stack.port_in_use(host, port):
            raise StackError(
                f"port {port} on {host} is in use: choose --prefect-port / --mlflow-port",
                code=EXIT_BAD_INPUT,
            )
    servers = [s for s in specs if s.health_url]
    workers = [s for s in specs if not s.health_url]
    tracking = next(
        (s.env["MLFLOW_TRACKING_URI"] for s in specs if "MLFLOW_TRACKING_URI" in s.env),
        home.tracking_uri,
    )
    started: list[stack.Started] = []

    secrets = str(auth.source) if auth else None
    prefect_auth = auth.values["PREFECT_AUTH_STRING"] if auth else None

    def record(ready: bool = False) -> stack.StackState:
        state = stack.StackState(
            urls.prefect, urls.mlflow, redact_uri(tracking), pools, tuple(started), ready, secrets
        )
        stack.write_state(home, state)
        return state

    deadline = time.monotonic() + timeout
    try:
        running = [(spec, _start(spec, home.root)) for spec in servers]  # in parallel
        started += [_started(spec, proc) for spec, proc in running]
        record()
        for spec, proc in running:
            _wait_http(spec, proc, deadline)
        if auth is not None and urls.mlflow:
            admin = accounts.admin_client(urls.mlflow, auth.values["MLFLOW_AUTH_ADMIN_PASSWORD"])
            accounts.provision(admin, auth.values)  # roles and service accounts, idempotent
        ensure_pools(urls.prefect_api, auth=prefect_auth)
        for spec, pool in zip(workers, pools, strict=True):
            proc = _start(spec, REPO_ROOT)
            started.append(_started(spec, proc))
            record()
            _wait_worker(urls.prefect_api, pool, proc, spec.log, deadline, prefect_auth)
    except BaseException:
        stop_all(tuple(started))
        stack.state_path(home).unlink(missing_ok=True)
        raise
    return record(ready=True)


def _print_status(state: stack.StackState, detached: bool) -> None:
    console.print("[bold green]loraflow stack is up[/]", highlight=False)
    for line in stack.status_lines(state):
        console.print("  " + line, highlight=False, soft_wrap=True)
    hint = "loraflow down stops it" if detached else "Ctrl-C stops it"
    console.print(
        f"  next: loraflow deploy configs/experiments/NAME.yaml; {hint}",
        highlight=False,
        soft_wrap=True,
    )


def _terminate(signum, frame):
    raise KeyboardInterrupt


# -- scheduler health (the pure reading of the log: tasks.core.ops.scheduler_health) ------


def server_health(state: stack.StackState | None):
    """What the running Prefect server of ``state`` logged since it started; None if none runs."""
    from tasks.core.ops.scheduler_health import scan_file

    servers = [p for p in (state.processes if state else ()) if p.name == "prefect-server"]
    return scan_file(servers[0].log) if servers and alive(servers[0]) else None


def _upcoming_runs(api: str, home: Home) -> int | None:
    """How many future runs the server's scheduler has created (None if the API won't say)."""
    from prefect.client.schemas import filters as f
    from prefect.client.schemas.objects import StateType
    from prefect.types._datetime import now

    upcoming = f.FlowRunFilter(
        state=f.FlowRunFilterState(type=f.FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        tags=f.FlowRunFilterTags(all_=["auto-scheduled"]),
        expected_start_time=f.FlowRunFilterExpectedStartTime(after_=now("UTC")),
    )
    try:
        auth = os.environ.get("PREFECT_API_AUTH_STRING") or stack_secrets(home).get(
            "PREFECT_AUTH_STRING"
        )
        with prefect_client(api, auth) as client:
            return client.count_flow_runs(flow_run_filter=upcoming)
    except Exception:  # status still reports what the log says
        return None


def scheduler_report(home: Home) -> list[str]:
    """Lines on the scheduler of the stack ``loraflow up`` runs on this home ([] if none runs):
    ok (with the runs it created ahead), or FAILING with the last error from the server log."""
    state = stack.read_state(home)
    health = server_health(state)
    if health is None:
        return []
    lines = [
        health.scheduler_line(_upcoming_runs(state.urls.prefect_api, home)),
        health.other_line(),
    ]
    return [line for line in lines if line]


class SchedulerWatch:
    """Warns on stderr when the stack's scheduler fails; reads the server log every 10 s."""

    def __init__(self, home: Home):
        from tasks.core.ops.scheduler_health import FailureAlarm

        self.home, self.alarm, self.next_read = home, FailureAlarm(), 0.0

    def check(self) -> None:
        if time.monotonic() < self.next_read:
            return
        self.next_read = time.monotonic() + 10
        health = server_health(stack.read_state(self.home))
        if health and self.alarm.update(len(health.scheduler_errors), time.monotonic()):
            warning_line(health.scheduler_line())


# -- commands -------------------------------------------------------------------------------


def up(
    prefect_port: Annotated[
        int, typer.Option(envvar="LORAFLOW_PREFECT_PORT", help="Prefect server (API + UI) port.")
    ] = stack.DEFAULT_PREFECT_PORT,
    mlflow_port: Annotated[
        int, typer.Option(envvar="LORAFLOW_MLFLOW_PORT", help="MLflow server (UI) port.")
    ] = stack.DEFAULT_MLFLOW_PORT,
    host: Annotated[str, typer.Option(help="Interface the servers listen on.")] = (
        stack.DEFAULT_HOST
    ),
    pool: Annotated[
        list[str] | None,
        typer.Option("--pool", help="Start a process worker for this pool (repeatable)."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once up; stop with loraflow down.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything to answer.")] = (
        180.0
    ),
    secrets: Annotated[
        Path | None,
        typer.Option(
            envvar="LORAFLOW_SECRETS",
            help="Secrets file (loraflow secrets init): Prefect and MLflow then authenticate "
            "every call, workers act as loraflow-worker. Without it: embedded mode, loopback.",
        ),
    ] = None,
) -> None:
    """Start a Prefect server (UI), an MLflow server (UI) and a process worker on this state."""
    home = apply_env()
    from tasks.core.ops.auth import load

    auth = load(secrets) if secrets else None
    if auth is None and host not in LOOPBACK:
        raise BadInput(
            f"--host {host} without --secrets would publish servers nobody authenticates; "
            "make a secrets file with `loraflow secrets init`"
        )
    pools = tuple(pool or ("cpu",))
    unknown = [p for p in pools if p not in stack.POOLS]
    if unknown:
        raise BadInput(f"--pool {unknown[0]}: allowed pools are {', '.join(stack.POOLS)}")
    existing = stack.read_state(home)
    if existing and any(alive(p) for p in existing.processes):
        console.print("a stack is already running on this home:", highlight=False)
        for line in stack.status_lines(existing):
            console.print("  " + line, highlight=False, soft_wrap=True)
        return
    console.print(f"starting Prefect, MLflow and {len(pools)} worker(s) on {home.root} ...")
    signal.signal(signal.SIGTERM, _terminate)  # `kill PID` stops the stack like Ctrl-C does
    # Ctrl-C (SIGINT) stops it even when a non-interactive shell started it in the background,
    # which hands it SIGINT ignored (Python then never raises KeyboardInterrupt): the stack
    # kept running and `up` hung (tests/ops/test_postgres.py).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    state = start_stack(
        home, host=host, prefect_port=prefect_port, mlflow_port=mlflow_port,
        pools=pools, timeout=timeout, auth=auth,
    )  # fmt: skip
    _print_status(state, detach)
    scheduler = SchedulerWatch(home)
    scheduler.check()  # a stack whose scheduler already fails says so at once
    if detach:
        return
    try:
        while all(alive(p) for p in state.processes):
            time.sleep(1)
            scheduler.check()
        dead = [p for p in state.processes if not alive(p)]
        err.print(f"{dead[0].name} stopped unexpectedly; log {dead[0].log}", highlight=False)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("\nstopping ...")
    finally:
        stopped = stop_all(state.processes)
        stack.state_path(home).unlink(missing_ok=True)
        console.print(f"stopped: {', '.join(stopped) or 'nothing left running'}")


def down() -> None:
    """Stop a stack started with ``loraflow up --detach``."""
    home = Home.from_env()
    state = stack.read_state(home)
    if state is None:
        console.print(f"no stack recorded under {home.root}")
        return
    stopped = stop_all(state.processes)
    stack.state_path(home).unlink(missing_ok=True)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the stack commands to the ``loraflow`` CLI."""
    app.command()(up)
    app.command()(down)
