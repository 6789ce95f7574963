"""The append-only decision history: every decision about a model is an MLflow run of its own.

Each evaluation with its gate decision, each registration, each promotion step and outcome,
each canary abort, each manual rollback and each monitor finding is written once, as a
FINISHED run of type ``decision`` (nested under the training run it is about, so the MLflow
UI lists a model's decisions under it), and never written to again. Tags on runs and
versions are an index of the latest state: ``index_tags`` rebuilds them from these records.

Why runs and not an appended JSONL artifact: MLflow has no append for artifacts (a re-upload
replaces the file, so a crash between read and write loses a line, and two writers lose one
another's), while creating a run is one atomic insert; runs are searchable by tag from any
client (``loraflow lineage``, the UI's search box), carry metrics a chart can read, and hold
the full record as their own artifact. A record is valid once FINISHED; a writer that dies
half-way leaves a FAILED or RUNNING run that readers skip.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from tasks.core.security import identity

RUN_TYPE_TAG = "loraflow.run_type"
RUN_TYPE = "decision"
PREFIX = "loraflow.decision."
RECORD_ARTIFACT = "decision.json"
PARENT_TAG = "mlflow.parentRunId"
MAX_TAG = 5000  # MLflow's VARCHAR(5000) for tag values
KINDS = (
    "evaluation",
    "registration",
    "promotion",
    "canary-step",
    "canary-outcome",
    "canary-abort",
    "rollback",
    "monitor",
    "serving-form",
)


def user() -> str:
    """Who takes a decision: the authenticated MLflow user (the worker's or promoter's service
    account, a named person) when talking to an authenticated server, else the OS user."""
    return identity.current().name


# Actors say which part of loraflow decided and, after the colon, the identity behind it.
def actor_pipeline() -> str:
    return f"pipeline:{user()}"


def actor_cli() -> str:
    return f"cli:{user()}"


def actor_canary() -> str:
    return f"canary:{user()}"


def actor_service() -> str:
    return f"service:{socket.gethostname()}:{user()}"


@dataclass(frozen=True)
class Decision:
    """One decision: what was decided about which model (version), by whom, on which config."""

    kind: str
    model: str
    outcome: str
    reason: str
    actor: str
    version: str | None = None
    train_run_id: str | None = None
    config_sha256: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    key: str = ""  # idempotency: a retry of the same decision finds the record instead

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown decision kind {self.kind!r}; one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Record:
    """A decision as read back: the run that holds it and its index fields."""

    run_id: str
    kind: str
    model: str
    outcome: str
    reason: str
    actor: str
    at: str
    version: str | None
    train_run_id: str | None
    config_sha256: str
    user: str
    key: str

    def summary(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"{self.kind}{version}: {self.outcome} ({self.reason})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _tags(decision: Decision, at: str) -> list[RunTag]:
    values = {
        RUN_TYPE_TAG: RUN_TYPE,
        "mlflow.runName": f"{decision.kind} {decision.outcome}"[:250],
        PREFIX + "kind": decision.kind,
        PREFIX + "model": decision.model,
        PREFIX + "outcome": decision.outcome,
        PREFIX + "reason": decision.reason,
        PREFIX + "actor": decision.actor,
        PREFIX + "user": user(),
        PREFIX + "at": at,
        PREFIX + "config_sha256": decision.config_sha256,
        PREFIX + "version": decision.version or "",
        PREFIX + "train_run_id": decision.train_run_id or "",
        PREFIX + "key": decision.key,
    }
    if decision.train_run_id:
        values[PARENT_TAG] = decision.train_run_id
    return [RunTag(k, str(v)[:MAX_TAG]) for k, v in values.items()]


def find(mlc: MlflowClient, model: str, key: str) -> Record | None:
    """The finished record written under ``key`` for ``model``, if any."""
    if not key:
        return None
    found = _search(mlc, f"tags.`{PREFIX}model` = '{model}' AND tags.`{PREFIX}key` = '{key}'")
    return found[0] if found else None


def append(
    mlc: MlflowClient,
    experiment_id: str,
    decision: Decision,
    artifacts: dict[str, dict | str] | None = None,
    files: dict[str, Path] | None = None,
    extra_tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    effect: Callable[[], None] | None = None,
) -> str:
    """Write ``decision`` as a new finished run; return its id (the existing one for a key).

    ``effect`` is what the decision does (moving an alias), run after the record is written
    and before it is marked FINISHED: if the registry refuses it, the record ends FAILED
    (readers skip it) and the refusal is raised, so no record claims what did not happen.

    ``artifacts`` maps artifact paths to JSON-able dicts or text; ``files`` to local files or
    folders (artifact folder -> path); ``extra_tags`` are searchable facts of this record
    (written with it, never changed); ``parent_run_id`` nests it (default: under the
    training run).
    The record itself is ``decision.json``.
    """
    existing = find(mlc, decision.model, decision.key)
    if existing is not None:
        return existing.run_id
    at = _now()
    tags = {t.key: t.value for t in _tags(decision, at)}
    tags |= {k: str(v)[:MAX_TAG] for k, v in (extra_tags or {}).items()}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    run_id = mlc.create_run(experiment_id, tags=tags).info.run_id
    try:
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in decision.figures.items()]
        for start in range(0, len(metrics), 1000):
            mlc.log_batch(run_id, metrics=metrics[start : start + 1000])
        mlc.log_dict(run_id, asdict(decision) | {"at": at, "user": user()}, RECORD_ARTIFACT)
        for path, content in (artifacts or {}).items():
            if isinstance(content, str):
                if content:
                    mlc.log_text(run_id, content, path)
            else:
                mlc.log_dict(run_id, content, path)
        for folder, local in (files or {}).items():
            if Path(local).is_dir():  # a folder's files, under ``folder``
                mlc.log_artifacts(run_id, str(local), folder)
            else:
                mlc.log_artifact(run_id, str(local), folder)
        if effect is not None:
            effect()
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")  # half a record is no record: readers skip it
        raise
    mlc.set_terminated(run_id, "FINISHED")
    return run_id


def record_of(run) -> Record:
    tags = run.data.tags

    def tag(name: str) -> str:
        return tags.get(PREFIX + name, "")

    return Record(
        run_id=run.info.run_id,
        kind=tag("kind"),
        model=tag("model"),
        outcome=tag("outcome"),
        reason=tag("reason"),
        actor=tag("actor"),
        at=tag("at"),
        version=tag("version") or None,
        train_run_id=tag("train_run_id") or None,
        config_sha256=tag("config_sha256"),
        user=tag("user"),
        key=tag("key"),
    )


def _search(mlc: MlflowClient, condition: str) -> list[Record]:
    experiments = [e.experiment_id for e in mlc.search_experiments()]
    if not experiments:
        return []
    runs = mlc.search_runs(
        experiments,
        filter_string=f"tags.`{RUN_TYPE_TAG}` = '{RUN_TYPE}' AND {condition}",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    records = [record_of(r) for r in runs if r.info.status == "FINISHED"]
    return sorted(records, key=lambda r: r.at)


def history(
    mlc: MlflowClient, model: str, version: str | None = None, kind: str | None = None
) -> list[Record]:
    """Every finished decision about ``model`` (one version's, one kind's), oldest first."""
    condition = f"tags.`{PREFIX}model` = '{model}'"
    if version is not None:
        condition += f" AND tags.`{PREFIX}version` = '{version}'"
    if kind is not None:
        condition += f" AND tags.`{PREFIX}kind` = '{kind}'"
    return _search(mlc, condition)


def read_record(mlc: MlflowClient, run_id: str, path: str = RECORD_ARTIFACT) -> dict:
    """A JSON artifact of a record ({} if absent)."""
    import mlflow

    try:
        data = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))
    except Exception:  # a record without that artifact
        return {}
    return data if isinstance(data, dict) else {}


# Which index tags each kind of record sets on the version it is about: the latest record of
# these kinds wins. ``index_tags`` recomputes them, so the tags are never the only copy.
PROMOTION_KINDS = ("promotion", "canary-outcome", "canary-abort", "rollback")


def index_tags(records: list[Record]) -> dict[str, str]:
    """The version's promotion index (``promotion.*``, ``canary.outcome``) from its history."""
    latest = [r for r in records if r.kind in PROMOTION_KINDS and r.outcome != "noop"]
    if not latest:
        return {}
    last = latest[-1]
    tags = {
        "promotion.action": last.outcome,
        "promotion.reason": last.reason,
        "promotion.at": last.at,
        "promotion.by": last.actor,
        "promotion.record": last.run_id,
    }
    if last.kind.startswith("canary"):
        tags["canary.outcome"] = last.outcome
    return tags


def forbidden(exc: Exception) -> bool:
    """Did an authenticated MLflow server refuse the call for lack of permission (403)?"""
    code = getattr(exc, "error_code", "")
    return code == "PERMISSION_DENIED" or "error code 403" in str(exc)


def append_about_version(
    mlc: MlflowClient,
    name: str,
    version: str,
    parent_run_id: str | None = None,
    effect: Callable[[], None] | None = None,
    artifacts: dict[str, dict | str] | None = None,
    files: dict[str, Path] | None = None,
    **fields,
) -> str:
    """Record a decision about registered version ``name`` v``version``: filed with its
    training run (experiment, nesting unless ``parent_run_id``), naming its config sha;
    ``effect``, ``artifacts`` and ``files`` as in ``append``."""
    model_version = mlc.get_model_version(name, version)
    fields.setdefault("config_sha256", model_version.tags.get("config_sha256", ""))
    decision = Decision(model=name, version=version, train_run_id=model_version.run_id, **fields)
    experiment_id = mlc.get_run(model_version.run_id).info.experiment_id
    return append(
        mlc, experiment_id, decision, artifacts, files, parent_run_id=parent_run_id, effect=effect
    )
