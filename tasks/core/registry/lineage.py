"""The full chain behind a registered version, read back from MLflow alone.

A postmortem asks: which model (base repo@revision, tokenizer), which data (sha256), which
config (sha256 + the resolved file), which verdicts (license, validation), which gates (every
figure and threshold), which code (git commit), which orchestration run (Prefect flow run
id), and every decision taken about it since: its evaluation, its registration, each
promotion step, canary outcome and rollback, in order, with who took it on which config.
The inputs are tags and artifacts of the version's training run; the decisions are the
records of the decision history (``history.py``); nothing else is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.config.loader import section_hash
from tasks.core.errors import LineageError
from tasks.core.registry.history import PROMOTION_KINDS, Record, history, record_of

# The version's tag naming the evaluation record it was registered from.
EVALUATION_TAG = "loraflow.evaluation_run_id"


@dataclass(frozen=True)
class Lineage:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    created: str
    tags: dict[str, str]  # the version's
    run_tags: dict[str, str]
    decision: dict = field(default_factory=dict)  # gates/decision.json of its evaluation
    audit: dict = field(default_factory=dict)  # audit/license.json
    validation: dict = field(default_factory=dict)  # data/validation.json
    resolved_config: str = ""
    decisions: tuple[Record, ...] = ()  # every decision about this version, oldest first

    @property
    def config_matches(self) -> bool | None:
        """Does the resolved config artifact hash to the recorded config sha256?"""
        if not self.resolved_config or not self.tags.get("config_sha256"):
            return None
        return section_hash(yaml.safe_load(self.resolved_config)) == self.tags["config_sha256"]

    def get(self, key: str, default: str = "?") -> str:
        return self.tags.get(key) or self.run_tags.get(key) or default

    def chain(self) -> list[tuple[str, str]]:
        """(what, answer) rows, in the order a postmortem asks them."""
        validation_rows = self.validation.get("rows", {})
        checks = self.validation.get("checks", [])
        verdicts = [c.get("verdict") for c in checks if isinstance(c, dict)]
        subjects = [
            f"{s.get('subject')} {s.get('license')} {s.get('decision')}"
            + (f" (approved by {s['approval'].get('approved_by')})" if s.get("approval") else "")
            for s in self.audit.get("subjects", [])
        ]
        match = {True: "matches the resolved config", False: "MISMATCH with the resolved config"}
        rows = [
            ("model", f"models:/{self.name}/{self.version}"),
            ("aliases", ", ".join(self.aliases) or "(none)"),
            ("base model", f"{self.get('base_repo_id')}@{self.get('base_revision')}"),
            (
                "tokenizer",
                f"{self.get('tokenizer_repo_id', self.get('base_repo_id'))}"
                f"@{self.get('tokenizer_revision')}",
            ),
            (
                "dataset",
                f"{self.get('data_name', '')} sha256 {self.get('dataset_sha256')}"
                + (
                    f" (train {validation_rows.get('train')}, eval {validation_rows.get('eval')})"
                    if validation_rows
                    else ""
                ),
            ),
            (
                "config",
                f"sha256 {self.get('config_sha256')}"
                + (f", {match[self.config_matches]}" if self.config_matches is not None else "")
                + f"; {self.get('config_file')}",
            ),
            ("resolved config", f"runs:/{self.run_id}/config/resolved.yaml"),
            (
                "license verdict",
                f"{self.get('license_verdict')} (policy {self.get('license_policy_version')}"
                f", sha256 {self.get('license_policy_sha256')[:12]})"
                + (": " + "; ".join(subjects) if subjects else ""),
            ),
            (
                "validation verdict",
                f"{self.get('validation_verdict')}"
                + (
                    f" ({verdicts.count('pass')} pass, {verdicts.count('warn')} warn, "
                    f"{verdicts.count('fail')} fail checks)"
                    if verdicts
                    else ""
                ),
            ),
            (
                "gate decision",
                f"{self.get('gate_decision')} (gate policy {self.get('gate_policy_version', '-')}"
                f", compared with champion {self.get('champion_compared', '-')})",
            ),
            ("training run", f"{self.run_id} ({self.run_tags.get('mlflow.runName', '')})"),
            ("git commit", self.get("git_commit")),
            ("prefect flow run", self.get("prefect.flow_run_id")),
            ("registered", f"{self.created} by {self.get('registered_by')}"),
            ("promotion", self.promotion()),
        ]
        return rows

    def promotion(self) -> str:
        """The latest promotion-kind decision, from the history (tags only for old versions)."""
        latest = [d for d in self.decisions if d.kind in PROMOTION_KINDS and d.outcome != "noop"]
        if latest:
            last = latest[-1]
            return f"{last.outcome} at {last.at} by {last.actor}: {last.reason}"
        action = self.tags.get("promotion.action")
        if not action:
            return "(no promotion decision recorded)"
        who = self.tags.get("promotion.by", "?")
        return (
            f"{action} at {self.tags.get('promotion.at', '?')} by {who}: "
            f"{self.tags.get('promotion.reason', '')}"
        )

    def gates(self) -> list[dict]:
        return list(self.decision.get("gates", []))


def parse_ref(ref: str) -> tuple[str, str]:
    """'NAME@ALIAS' or 'NAME@VERSION' -> (name, alias or version number)."""
    name, sep, alias = ref.partition("@")
    if not sep or not name or not alias:
        raise LineageError(f"{ref!r}: expected NAME@ALIAS (e.g. my-model@champion) or NAME@3")
    return name, alias


def _record(run_id: str, path: str) -> dict:
    try:
        data = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))
    except Exception:  # absent in runs made before the record existed
        return {}
    return data if isinstance(data, dict) else {}


def _text(run_id: str, path: str) -> str:
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception:
        return ""


def _when(millis: int | None) -> str:
    if not millis:
        return "?"
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def _evaluation(mlc: MlflowClient, run_id: str) -> Record | None:
    try:
        run = mlc.get_run(run_id)
    except MlflowException:
        return None
    return record_of(run)


def collect(mlc: MlflowClient, ref: str) -> Lineage:
    name, alias = parse_ref(ref)
    try:
        model = mlc.get_registered_model(name)
        version = (
            mlc.get_model_version(name, alias)
            if alias.isdigit()
            else mlc.get_model_version_by_alias(name, alias)
        )
    except MlflowException:
        known = [m.name for m in mlc.search_registered_models()]
        raise LineageError(
            f"{ref}: no such registered model or alias (models: {', '.join(known) or 'none'})"
        ) from None
    aliases = tuple(a for a, v in sorted(model.aliases.items()) if str(v) == str(version.version))
    run = mlc.get_run(version.run_id)
    tags = dict(version.tags)
    evaluation_id = tags.get(EVALUATION_TAG, "")
    # Versions registered before the history existed kept their decision in the training run.
    decision_run = evaluation_id or version.run_id
    decisions = list(history(mlc, name, str(version.version)))
    evaluation = _evaluation(mlc, evaluation_id) if evaluation_id else None
    if evaluation is not None:
        decisions.insert(0, evaluation)
    return Lineage(
        name=name,
        version=str(version.version),
        aliases=aliases,
        run_id=version.run_id,
        created=_when(version.creation_timestamp),
        tags=tags,
        run_tags=dict(run.data.tags),
        decision=_record(decision_run, "gates/decision.json"),
        audit=_record(version.run_id, "audit/license.json"),
        validation=_record(version.run_id, "data/validation.json"),
        resolved_config=_text(version.run_id, "config/resolved.yaml"),
        decisions=tuple(decisions),
    )


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: tuple[str, ...]
    created: str
    run_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class RefusedRun:
    """An evaluation the gates refused: its record, the training run, when, why, which config."""

    run_id: str
    train_run_id: str
    at: str
    failures: str
    config_sha256: str

    @property
    def at_short(self) -> str:
        return self.at[:19].replace("T", " ")


def versions(mlc: MlflowClient, name: str) -> tuple[list[VersionRow], list[RefusedRun]]:
    """Every version of ``name`` (newest first) and the evaluations its gates refused."""
    try:
        model = mlc.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in mlc.search_registered_models()]
        raise LineageError(
            f"{name}: no such registered model (models: {', '.join(known) or 'none'})"
        ) from None
    by_version: dict[str, list[str]] = {}
    for alias, number in model.aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    rows = [
        VersionRow(
            str(v.version),
            tuple(sorted(by_version.get(str(v.version), []))),
            _when(v.creation_timestamp),
            v.run_id,
            dict(v.tags),
        )
        for v in mlc.search_model_versions(f"name = '{name}'")
    ]
    rows.sort(key=lambda r: int(r.version), reverse=True)
    refused = [
        RefusedRun(r.run_id, r.train_run_id or "", r.at, r.reason, r.config_sha256)
        for r in reversed(history(mlc, name, kind="evaluation"))
        if r.outcome == "fail"
    ]
    return rows, refused
