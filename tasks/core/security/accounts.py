"""MLflow accounts and roles of an authenticated stack: the server's config, and provisioning.

``auth_ini`` is the basic-auth configuration the ``loraflow-auth`` app reads
(``MLFLOW_AUTH_CONFIG_PATH``): its own user store, ``NO_PERMISSIONS`` for users without a
role, the admin ``loraflow-admin`` (password from ``MLFLOW_AUTH_ADMIN_PASSWORD``, never in the
file). ``provision`` then makes, through MLflow's own REST API as that admin, the three roles
of ``roles.py`` with their grants and the service accounts with their role and password; it
is idempotent and doubles as rotation (an existing account gets the current password).
People are added with ``add_user`` (``loraflow access add-user``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tasks.core.security import roles

ADMIN = "loraflow-admin"
WORKSPACE = "default"  # MLflow keeps roles in a workspace; without workspaces it is "default"


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    password_env: str  # the secrets file's key holding its password


WORKER = Account("loraflow-worker", roles.PIPELINE, "LORAFLOW_WORKER_PASSWORD")
PROMOTER = Account("loraflow-promoter", roles.PROMOTER, "LORAFLOW_PROMOTER_PASSWORD")
SERVE = Account("loraflow-serve", roles.READER, "LORAFLOW_SERVE_PASSWORD")
SERVICE_ACCOUNTS = (WORKER, PROMOTER, SERVE)
BY_NAME = {"worker": WORKER, "promoter": PROMOTER, "serve": SERVE}


def auth_ini(database_uri: str) -> str:
    """The basic-auth config of the loraflow-auth app (no secret in it)."""
    return (
        "# MLflow basic-auth config of `mlflow server --app-name loraflow-auth` (written by\n"
        "# loraflow). The admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD.\n"
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        "# Remember a verified password for 60 s: without it every request pays a PBKDF2 hash\n"
        "# (a pipeline makes hundreds). A password changed through the API applies at once.\n"
        "auth_cache_ttl_seconds = 60\n"
    )


def client_env(account: Account, values: Mapping[str, str], mlflow_url: str = "") -> dict:
    """The environment of a client acting as ``account`` (Prefect and MLflow credentials)."""
    env = {
        "MLFLOW_TRACKING_USERNAME": account.username,
        "MLFLOW_TRACKING_PASSWORD": values[account.password_env],
        "PREFECT_API_AUTH_STRING": values["PREFECT_AUTH_STRING"],
    }
    if mlflow_url:
        env |= {"MLFLOW_TRACKING_URI": mlflow_url, "MLFLOW_REGISTRY_URI": mlflow_url}
    return env


def admin_client(tracking_uri: str, password: str):
    """MLflow's ``AuthServiceClient`` acting as the admin (credentials given, not from env)."""
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    creds = MlflowHostCreds(tracking_uri, username=ADMIN, password=password)

    class AdminClient(AuthServiceClient):
        def _request(self, endpoint, method, *, expected_status: int = 200, **kwargs):
            response = http_request(creds, endpoint, method, **kwargs)
            response = verify_rest_response(response, endpoint, expected_status=expected_status)
            return response.json() if response.content else {}

    return AdminClient(tracking_uri)


def ensure_roles(client) -> dict[str, int]:
    """The loraflow roles with exactly their grants; role name -> id."""
    existing = {role.name: role for role in client.list_roles(WORKSPACE)}
    ids = {}
    for name in roles.ROLES:
        role = existing.get(name) or client.create_role(
            WORKSPACE, name, roles.ROLE_DESCRIPTION[name]
        )
        have = {
            (p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)
        }
        for resource_type, pattern, permission in roles.GRANTS[name]:
            current = have.get((resource_type, pattern))
            if current is None:
                client.add_role_permission(role.id, resource_type, pattern, permission)
            elif current.permission != permission:
                client.update_role_permission(current.id, permission)
        ids[name] = role.id
    return ids


def ensure_user(client, username: str, password: str, role: str, role_ids: dict[str, int]) -> str:
    """Create the user (or set its password) and give it ``role``; what was done."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_user(username)
        client.update_user_password(username, password)
        done = "password set"
    except MlflowException:
        client.create_user(username, password)
        done = "created"
    if role not in {r.name for r in client.list_user_roles(username)}:
        client.assign_role(username, role_ids[role])
    return f"{username}: {done}, role {role}"


def provision(client, values: Mapping[str, str]) -> list[str]:
    """Roles and service accounts from the secrets ``values``; one line per account."""
    role_ids = ensure_roles(client)
    return [
        ensure_user(client, a.username, values[a.password_env], a.role, role_ids)
        for a in SERVICE_ACCOUNTS
    ]


def add_user(client, username: str, password: str, role: str) -> str:
    if role not in roles.ROLES:
        from tasks.core.errors import BadInput

        raise BadInput(f"unknown role {role!r}; one of {', '.join(roles.ROLES)}")
    return ensure_user(client, username, password, role, ensure_roles(client))
