"""``mlflow server --app-name loraflow-auth``: MLflow's basic-auth app plus loraflow's rules.

MLflow's supported way to change what its server allows is an app plugin: a Flask app factory
registered under the ``mlflow.app`` entry point (``pyproject.toml``), which ``mlflow server
--app-name NAME`` loads in place of the plain server. This factory builds MLflow's own
``basic-auth`` app (authentication, per-user and per-role permissions, user and role
management, unchanged) and adds one before-request hook that runs after MLflow's own check
(so only authenticated, permitted requests reach it) and applies ``roles.refusal``: MLflow's
permissions cannot tell a ``champion`` move from a ``challenger`` move (both need EDIT on the
registered model), nor readers from creators (every user may create experiments and models),
nor check that a decision record names its author. Refusals are MLflow-shaped 403 errors
(``PERMISSION_DENIED``), so every MLflow client shows the reason.

The server reads its configuration as the basic-auth app does (``MLFLOW_AUTH_CONFIG_PATH``,
``MLFLOW_AUTH_ADMIN_PASSWORD``, ``MLFLOW_FLASK_SERVER_SECRET_KEY``); ``accounts.py`` writes
the file and provisions the roles.
"""

from __future__ import annotations

import logging

from tasks.core.security import roles

log = logging.getLogger(__name__)


def _routes() -> dict[tuple[str, str], str]:
    """(path, method) -> operation name, for every REST path of the guarded operations."""
    from mlflow.protos.model_registry_pb2 import ModelRegistryService
    from mlflow.protos.service_pb2 import MlflowService
    from mlflow.server.handlers import get_service_endpoints

    found = {}
    for service in (MlflowService, ModelRegistryService):
        for path, request_class, methods in get_service_endpoints(service, lambda cls: cls):
            name = getattr(request_class, "__name__", "")
            if name in roles.OPERATIONS:
                found.update({(path, method): name for method in methods})
    return found


def _body() -> dict:
    from flask import request

    body = request.get_json(silent=True) if request.is_json or request.data else None
    merged = dict(request.args.items())
    if isinstance(body, dict):
        merged.update(body)
    return merged


def _caller():
    from mlflow.server import auth

    username = auth.authenticate_request().username
    user = auth.store.get_user(username)
    names = frozenset(role.name for role in auth.store.list_user_roles(user.id))
    return roles.Caller(username, names, bool(user.is_admin))


def _held_aliases(operation: str, body: dict) -> list[str]:
    """The aliases held by the version or model a delete would remove."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_model_registry_store

    name = body.get("name")
    if operation not in (roles.DELETE_VERSION, roles.DELETE_MODEL) or not name:
        return []
    try:
        model = _get_model_registry_store().get_registered_model(name)
    except MlflowException:
        return []  # nothing to protect; MLflow answers the missing model itself
    aliases = model.aliases
    pairs = (
        aliases.items() if isinstance(aliases, dict) else ((a.alias, a.version) for a in aliases)
    )
    if operation == roles.DELETE_MODEL:
        return [alias for alias, _ in pairs]
    return [alias for alias, version in pairs if str(version) == str(body.get("version"))]


def _forbidden(message: str):
    from flask import jsonify

    response = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    response.status_code = 403
    return response


def enforce(routes: dict[tuple[str, str], str]):
    """The before-request hook over ``routes``: None lets MLflow handle the request."""
    from flask import request

    def hook():
        operation = routes.get((request.path, request.method))
        if operation is None:
            return None
        body = _body()
        caller = _caller()
        why = roles.refusal(operation, caller, body, _held_aliases(operation, body))
        if why is None:
            return None
        log.warning("refused %s by %s: %s", operation, caller.username, why)
        return _forbidden(why)

    return hook


def create_app(app=None):
    """The ``loraflow-auth`` app: MLflow's basic-auth app with loraflow's rules on top."""
    from mlflow.server import app as mlflow_app
    from mlflow.server.auth import create_app as basic_auth_app

    flask_app = app if app is not None else mlflow_app
    served = basic_auth_app(flask_app)  # registers MLflow's own before-request check first
    flask_app.before_request(enforce(_routes()))
    return served
