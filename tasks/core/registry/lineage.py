"""The full chain behind a registered version, read back from MLflow alone.

A postmortem asks: which model (base repo@revision, tokenizer), which data (sha256), which
config (sha256 + the resolved file), which verdicts (license, validation), which gates (every
figure and threshold), which code (git commit), which orchestration run (Prefect flow run
id), and who promoted it and why. Every answer is a tag on the version or its training run,
or a record in that run's artifacts; this module gathers them without any other state.
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

MODEL_NAME_TAG = "loraflow.model_name"


@dataclass(frozen=True)
class Lineage:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    created: str
    tags: dict[str, str]  # the version's
    run_tags: dict[str, str]
    decision: dict = field(default_factory=dict)  # gates/decision.json
    audit: dict = field(default_factory=dict)  # audit/license.json
    validation: dict = field(default_factory=dict)  # data/validation.json
    resolved_config: str = ""

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
        action = self.tags.get("promotion.action")
        if not action:
            return "(no promotion decision recorded)"
        who = self.tags.get("promotion.by") or (
            f"the pipeline (flow run {self.get('prefect.flow_run_id')}, "
            f"started by {self.get('registered_by')})"
        )
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
    return Lineage(
        name=name,
        version=str(version.version),
        aliases=aliases,
        run_id=version.run_id,
        created=_when(version.creation_timestamp),
        tags=dict(version.tags),
        run_tags=dict(run.data.tags),
        decision=_record(version.run_id, "gates/decision.json"),
        audit=_record(version.run_id, "audit/license.json"),
        validation=_record(version.run_id, "data/validation.json"),
        resolved_config=_text(version.run_id, "config/resolved.yaml"),
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
    run_id: str
    started: str
    failures: str


def versions(mlc: MlflowClient, name: str) -> tuple[list[VersionRow], list[RefusedRun]]:
    """Every version of ``name`` (newest first) and the candidate runs its gates refused."""
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
    experiments = [e.experiment_id for e in mlc.search_experiments()]
    refused = [
        RefusedRun(r.info.run_id, _when(r.info.start_time), r.data.tags.get("gate_failures", ""))
        for r in mlc.search_runs(
            experiments,
            filter_string=f"tags.`{MODEL_NAME_TAG}` = '{name}' AND tags.gate_decision = 'fail'",
            order_by=["attributes.start_time DESC"],
            max_results=20,
        )
    ]
    return rows, refused
