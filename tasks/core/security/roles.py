"""Roles in the registry and the rules MLflow's permissions cannot express, as plain data.

MLflow's basic-auth app grants per user (or per role) READ / USE / EDIT / MANAGE on
experiments and registered models. Three loraflow roles are MLflow roles (``/mlflow/roles``),
each with wildcard grants on both resource types:

- ``loraflow-reader``: READ. Sees runs, versions, aliases and lineage; changes nothing.
- ``loraflow-pipeline``: EDIT. The workers' service account: creates experiments, runs,
  decision records, model versions and the ``challenger`` alias.
- ``loraflow-promoter``: EDIT. The promotion flow's service account and the people allowed to
  promote or roll back.

EDIT on a registered model covers every alias (``SetRegisteredModelAlias`` needs only
``can_update``), so by MLflow's permissions alone a worker could move ``champion`` exactly as
it sets ``challenger``. ``refusal`` adds the rules that close this (``mlflow_app.py`` applies
them to every request after MLflow's own check):

1. only a ``loraflow-promoter`` may set or delete ``champion`` / ``previous-champion``, or
   delete a version or a model that holds one (deleting it moves the alias too);
2. only a writer role (pipeline, promoter) or an admin may create experiments or registered
   models (with workspaces off MLflow lets every authenticated user create them): readers
   only read;
3. a decision record names its author: a run created with ``loraflow.decision.*`` tags must
   carry ``loraflow.decision.user`` equal to the authenticated user, and no decision tag is
   set, changed or deleted afterwards (records are append-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

READER, PIPELINE, PROMOTER = "loraflow-reader", "loraflow-pipeline", "loraflow-promoter"
ROLES = (READER, PIPELINE, PROMOTER)
WRITERS = frozenset({PIPELINE, PROMOTER})
# (resource type, pattern, permission) per role: MLflow's own role permissions.
GRANTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    READER: (("experiment", "*", "READ"), ("registered_model", "*", "READ")),
    PIPELINE: (("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")),
    PROMOTER: (("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")),
}
PROTECTED_ALIASES = ("champion", "previous-champion")
DECISION_PREFIX = "loraflow.decision."
DECISION_USER_TAG = DECISION_PREFIX + "user"
ROLE_DESCRIPTION = {
    READER: "reads runs, models, aliases and lineage",
    PIPELINE: "creates runs, decision records, model versions and the challenger alias",
    PROMOTER: "also moves champion / previous-champion (promotion, rollback)",
}

# The operations the rules look at (named after MLflow's request messages).
SET_ALIAS, DELETE_ALIAS = "SetRegisteredModelAlias", "DeleteRegisteredModelAlias"
DELETE_VERSION, DELETE_MODEL = "DeleteModelVersion", "DeleteRegisteredModel"
CREATE_EXPERIMENT, CREATE_MODEL = "CreateExperiment", "CreateRegisteredModel"
CREATE_RUN = "CreateRun"
RUN_TAG_WRITES = ("SetTag", "DeleteTag", "LogBatch")
OPERATIONS = (
    SET_ALIAS, DELETE_ALIAS, DELETE_VERSION, DELETE_MODEL, CREATE_EXPERIMENT, CREATE_MODEL,
    CREATE_RUN, *RUN_TAG_WRITES,
)  # fmt: skip


@dataclass(frozen=True)
class Caller:
    username: str
    roles: frozenset[str]
    admin: bool = False


def _tag_keys(body: Mapping) -> list[str]:
    keys = [t.get("key", "") for t in body.get("tags") or () if isinstance(t, Mapping)]
    return keys + ([body["key"]] if isinstance(body.get("key"), str) else [])


def _alias_rule(operation: str, caller: Caller, body: Mapping, held: Iterable[str]) -> str | None:
    if PROMOTER in caller.roles:
        return None
    if operation in (SET_ALIAS, DELETE_ALIAS) and body.get("alias") in PROTECTED_ALIASES:
        return (
            f"only the {PROMOTER} role may move the '{body['alias']}' alias; "
            f"{caller.username} does not hold it"
        )
    touched = sorted(set(held) & set(PROTECTED_ALIASES))
    if operation in (DELETE_VERSION, DELETE_MODEL) and touched:
        return (
            f"only the {PROMOTER} role may delete what holds the {', '.join(touched)} "
            f"alias; {caller.username} does not hold it"
        )
    return None


def _record_rule(operation: str, caller: Caller, body: Mapping) -> str | None:
    if operation == CREATE_RUN:
        tags = {
            t.get("key"): t.get("value") for t in body.get("tags") or () if isinstance(t, Mapping)
        }
        named = tags.get(DECISION_USER_TAG)
        if any(str(k).startswith(DECISION_PREFIX) for k in tags) and named != caller.username:
            return (
                f"a decision record must name its authenticated author: "
                f"{DECISION_USER_TAG} is {named!r}, the caller is {caller.username!r}"
            )
    if operation in RUN_TAG_WRITES and any(k.startswith(DECISION_PREFIX) for k in _tag_keys(body)):
        return "decision records are append-only: their loraflow.decision.* tags never change"
    return None


def refusal(
    operation: str,
    caller: Caller,
    body: Mapping,
    held_aliases: Iterable[str] = (),
) -> str | None:
    """Why ``caller`` may not do ``operation`` with request ``body``; None when allowed.

    ``held_aliases``: the aliases that a deleted version or model holds now.
    """
    if operation in (CREATE_EXPERIMENT, CREATE_MODEL) and not (
        caller.admin or caller.roles & WRITERS
    ):
        roles = ", ".join(sorted(caller.roles)) or "none"
        return f"{caller.username} may only read (roles: {roles})"
    return _alias_rule(operation, caller, body, held_aliases) or _record_rule(
        operation, caller, body
    )
