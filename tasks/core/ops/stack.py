"""The local stack's plan, free of Prefect: ports, process command lines, URLs, state file.

``loraflow up`` starts a Prefect server (API + UI), an MLflow server on the embedded store and
one process worker per work pool. Everything it needs to know (which argv, which environment,
which URL answers when a process is ready, where its log goes) is decided here as plain data,
so the command module only starts, watches and stops processes, and tests check the plan
without starting anything. The state file lets ``loraflow down`` stop a detached stack.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.home import Home
from tasks.core.ops.auth import APP_NAME, StackAuth, redact_uri, scrub

if TYPE_CHECKING:
    from tasks.core.config.experiment import ExperimentConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
POOLS = ("cpu", "gpu")  # the work pools a deployment may name (schedule.work_pool)
FLOW_NAME = "finetune"
ENTRYPOINT = "flows/finetune.py:finetune"

# Events that start retraining through a deployment trigger (a Prefect automation). The
# resource names what changed: a dataset (by data.name) or a registered model.
EVENTS = {
    "data.updated": "loraflow.data.updated",
    "drift.detected": "loraflow.drift.detected",
    "model.stale": "loraflow.model.stale",
}
# New data changes the data files' sha256, so the cache keys see it; drift or staleness with
# the same files would hit every cache, so those retrain with force=True.
FORCE_ON = {"drift.detected", "model.stale"}
# A triggered run's ``cause`` parameter, rendered by the server from the event that started it
# (Prefect's templated action parameters): the run, and the version it registers, name it.
CAUSE_TEMPLATE = {
    "__prefect_kind": "jinja",
    "template": "{{ event.event }} {{ event.id }} record={{ event.payload.record | default('') }}",
}


def dataset_resource(name: str) -> str:
    return f"loraflow.dataset.{name}"


def model_resource(name: str) -> str:
    return f"loraflow.model.{name}"


@dataclass(frozen=True)
class TriggerPlan:
    """One deployment trigger: an event on a resource starts a run with these parameters."""

    name: str
    event: str
    resource_id: str
    force: bool


@dataclass(frozen=True)
class DeploymentPlan:
    """What ``loraflow deploy`` registers for one experiment config."""

    name: str
    config_path: str  # relative to the repository when inside it: workers run from its root
    description: str
    cron: str | None
    timezone: str
    active: bool
    work_pool: str
    tags: tuple[str, ...]
    triggers: tuple[TriggerPlan, ...]

    @property
    def full_name(self) -> str:
        return f"{FLOW_NAME}/{self.name}"

    def parameters(self, force: bool = False) -> dict[str, object]:
        return {"config_path": self.config_path, "force": force}

    def trigger_parameters(self, trigger: TriggerPlan) -> dict[str, object]:
        """A triggered run's parameters: forced or not, and the event as its ``cause``."""
        return {**self.parameters(force=trigger.force), "cause": CAUSE_TEMPLATE}


def deployment_plan(cfg: ExperimentConfig, config_path: Path, repo: Path) -> DeploymentPlan:
    path = Path(config_path).resolve()
    try:
        shown = str(path.relative_to(Path(repo).resolve()))
    except ValueError:
        shown = str(path)
    schedule = cfg.schedule
    triggers = tuple(
        TriggerPlan(
            name=f"{cfg.name}: retrain on {kind}",
            event=EVENTS[kind],
            resource_id=(
                dataset_resource(cfg.data.name)
                if kind == "data.updated"
                else model_resource(cfg.registry.model_name)
            ),
            force=kind in FORCE_ON,
        )
        for kind in schedule.retrain_on
    )
    model = cfg.discovery.repo_id or f"discovered {cfg.discovery.task} model"
    return DeploymentPlan(
        name=cfg.name,
        config_path=shown,
        description=cfg.description or f"{model} fine-tuned on {cfg.data.name}",
        cron=schedule.cron,
        timezone=schedule.timezone,
        active=schedule.active,
        work_pool=schedule.work_pool,
        tags=("loraflow", f"dataset:{cfg.data.name}", f"model:{cfg.registry.model_name}"),
        triggers=triggers,
    )


@dataclass(frozen=True)
class StackUrls:
    """Where the stack answers; UI page URLs are built from these."""

    prefect: str
    mlflow: str | None

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect}/api"

    def flow_run(self, flow_run_id: str) -> str:
        return f"{self.prefect}/runs/flow-run/{flow_run_id}"

    def deployment(self, deployment_id: str) -> str:
        return f"{self.prefect}/deployments/deployment/{deployment_id}"

    def registered_model(self, name: str) -> str:
        return f"{self.mlflow}/#/models/{name}"


def urls(host: str, prefect_port: int, mlflow_port: int | None) -> StackUrls:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return StackUrls(
        prefect=f"http://{shown}:{prefect_port}",
        mlflow=f"http://{shown}:{mlflow_port}" if mlflow_port else None,
    )


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running process of the stack and how to tell that it is ready."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    log: Path
    health_url: str | None = None  # GET answers 200 once ready; None: readiness checked apart


def _env(home: Home, base: dict[str, str], **extra: str) -> dict[str, str]:
    # A server must not talk to another server; it serves its own database. Workers get
    # the stack's API URL through ``extra``. No process inherits a secret: each one's own
    # come through ``extra`` (auth.py).
    inherited = {k: v for k, v in scrub(base).items() if k != "PREFECT_API_URL"}
    return {**inherited, **home.env(), **extra}


def plan(
    home: Home,
    python: str,
    *,
    host: str = DEFAULT_HOST,
    prefect_port: int = DEFAULT_PREFECT_PORT,
    mlflow_port: int = DEFAULT_MLFLOW_PORT,
    pools: tuple[str, ...] = ("cpu",),
    base_env: dict[str, str] | None = None,
    auth: StackAuth | None = None,
) -> tuple[StackUrls, list[ProcessSpec]]:
    """The processes of a local stack, in start order: Prefect server, MLflow server, workers.

    The MLflow server is left out when the tracking URI already names a server (http[s]://):
    the stack then uses that one. Its backend is whatever ``MLFLOW_TRACKING_URI`` says
    (the embedded SQLite file by default, PostgreSQL when pointed there), passed in the
    environment (a PostgreSQL URI holds a password). With ``auth`` every server checks
    credentials and the workers use the MLflow server as ``loraflow-worker``.
    """
    base = dict(os.environ if base_env is None else base_env)
    tracking = base.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.mlflow_db}"
    remote_mlflow = tracking.startswith(("http://", "https://"))
    found = urls(host, prefect_port, None if remote_mlflow else mlflow_port)
    logs = home.root / "logs"
    specs = [
        ProcessSpec(
            "prefect-server",
            (
                python,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(prefect_port),
            ),  # fmt: skip
            # The UI calls the API at PREFECT_UI_API_URL, which otherwise assumes port 4200.
            _env(
                home,
                base,
                PREFECT_UI_API_URL=found.prefect_api,
                **(auth.prefect_server_env() if auth else {}),
            ),
            logs / "prefect-server.log",
            f"{found.prefect_api}/health",
        )
    ]
    if not remote_mlflow:
        specs.append(
            ProcessSpec(
                "mlflow-server",
                (
                    python,
                    "-m",
                    "mlflow",
                    "server",
                    *(("--app-name", APP_NAME) if auth else ()),
                    "--default-artifact-root",
                    home.mlflow_artifacts.resolve().as_uri(),
                    "--host",
                    host,
                    "--port",
                    str(mlflow_port),
                    "--workers",
                    "1",
                ),  # fmt: skip
                # Job execution (GenAI judges) would add a runner and seven huey consumers.
                _env(
                    home,
                    base,
                    MLFLOW_TRACKING_URI=tracking,
                    MLFLOW_BACKEND_STORE_URI=tracking,
                    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                    **(auth.mlflow_server_env(home) if auth else {}),
                ),  # fmt: skip
                logs / "mlflow-server.log",
                f"{found.mlflow}/health",
            )
        )
    for pool in pools:
        specs.append(
            ProcessSpec(
                f"worker-{pool}",
                (
                    python,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--type",
                    "process",
                    "--name",
                    worker_name(pool),
                ),  # fmt: skip
                _worker_env(home, base, found, tracking, auth),
                logs / f"worker-{pool}.log",
            )
        )
    return found, specs


def _worker_env(
    home: Home, base: dict[str, str], found: StackUrls, tracking: str, auth: StackAuth | None
) -> dict[str, str]:
    if auth is None:
        return _env(home, base, PREFECT_API_URL=found.prefect_api, MLFLOW_TRACKING_URI=tracking)
    server = found.mlflow or tracking  # through the (authenticating) server, never the store
    return _env(home, base, PREFECT_API_URL=found.prefect_api, **auth.worker_env(server))


def worker_name(pool: str) -> str:
    return f"loraflow-{pool}-{socket.gethostname()}"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS calls free right now (tests run stacks side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the state file of a running stack ----------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A started process: pid plus its start time, so a recycled pid is never signalled."""

    name: str
    pid: int
    started: float  # processes.started_at(pid); older state files wrote psutil's create_time
    log: str


@dataclass(frozen=True)
class StackState:
    prefect_url: str
    mlflow_url: str | None
    tracking_uri: str
    pools: tuple[str, ...]
    processes: tuple[Started, ...] = field(default_factory=tuple)
    # Written as each process starts (so `down` can stop a half-started stack whose `up` was
    # killed) and marked ready once every process answers.
    ready: bool = False
    secrets: str | None = None  # the secrets file of an authenticated stack (never a value)

    @property
    def urls(self) -> StackUrls:
        return StackUrls(self.prefect_url, self.mlflow_url)


def state_path(home: Home) -> Path:
    return home.root / "stack.json"


def write_state(home: Home, state: StackState) -> Path:
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2) + "\n")
    return path


def read_state(home: Home) -> StackState | None:
    path = state_path(home)
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return StackState(
        prefect_url=raw["prefect_url"],
        mlflow_url=raw.get("mlflow_url"),
        tracking_uri=raw["tracking_uri"],
        pools=tuple(raw.get("pools", ())),
        processes=tuple(_started(p) for p in raw.get("processes", ())),
        ready=raw.get("ready", False),
        secrets=raw.get("secrets"),
    )


def _started(raw: dict) -> Started:
    raw = dict(raw)
    if "create_time" in raw:  # written by an older loraflow: an epoch time, still compared
        raw["started"] = raw.pop("create_time")
    return Started(**raw)


def api_url(home: Home, environ: dict[str, str] | None = None) -> str | None:
    """The Prefect API to talk to: ``PREFECT_API_URL`` if set, else the running stack's."""
    environ = os.environ if environ is None else environ
    if environ.get("PREFECT_API_URL"):
        return environ["PREFECT_API_URL"]
    state = read_state(home)
    return state.urls.prefect_api if state else None


def server_answers(api: str, timeout_s: float = 1.0) -> bool:
    """Whether the Prefect API at ``api`` answers its health check (a stack left running)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=timeout_s) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def status_lines(state: StackState) -> list[str]:
    lines = [
        f"Prefect UI   {state.urls.prefect}",
        f"Prefect API  {state.urls.prefect_api}   (export PREFECT_API_URL to use it)",
        f"MLflow UI    {state.mlflow_url or '(remote) ' + state.tracking_uri}",
        f"MLflow store {redact_uri(state.tracking_uri)}",
        f"work pools   {', '.join(state.pools) or '(none)'} (process workers)",
        "auth         "
        + (
            f"Prefect basic auth, MLflow {APP_NAME} (roles reader, pipeline, promoter), "
            f"secrets {state.secrets}"
            if state.secrets
            else "none: embedded mode, loopback only (loraflow up --secrets FILE to require it)"
        ),
    ]
    lines += [f"  {p.name:<15} pid {p.pid:<7} log {p.log}" for p in state.processes]
    return lines
