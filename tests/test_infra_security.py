"""The deployment files' security, validated (no Docker engine or cluster runs here): every
secret of the compose stack is required (``${NAME:?...}``) and goes by environment, ports are
published on loopback unless told, Grafana has no fixed password or anonymous viewers, each
client has its own account; the real ``docker compose config`` fails without the secrets and
passes with ``loraflow secrets init``'s file; both images run as one non-root uid and the
Kubernetes job reads its credentials from a Secret (docs/security.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from tasks.core.security import accounts, envfile
from tests.conftest import REPO
from tests.test_infra import (
    COMPOSE,
    INFRA,
    K8S_TEMPLATE,
    REQUIRED,
    SERVICES,
    _rendered_job,
    command_of,
)

# -- secrets, ports, users ---------------------------------------------------------------------

SECRET_NAMES = {s.name for s in envfile.SECRETS}
REFERENCE = re.compile(r"\$\{(\w+)(:?[-?+]?)([^}]*)\}")


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _references() -> list[tuple[str, str]]:
    """Every ``${VAR...}`` of the compose file's values: (VAR, operator), e.g. ("X", ":?")."""
    return [(m[0], m[1]) for text in _strings(COMPOSE) for m in REFERENCE.findall(text)]


def test_compose_secrets_are_required_and_have_no_default():
    """Every secret is ``${VAR:?...}``: compose refuses an unset or empty one, and no value of
    the file stands in for it; the generated secrets file provides every one of them."""
    references = _references()
    used = {name for name, _ in references if name in SECRET_NAMES}
    assert used == SECRET_NAMES  # every secret of `loraflow secrets init` has its use
    for name, operator in references:
        sensitive = name in SECRET_NAMES or re.search(r"PASSWORD|SECRET|AUTH", name)
        if sensitive:
            assert operator == ":?", f"${{{name}}} must be ${{{name}:?message}}"
    # The optional predict token is the one secret that may be empty (empty: /predict open).
    assert ("LORAFLOW_PREDICT_TOKEN", ":-") in references
    generated = envfile.generate()
    assert {name for name, op in references if op == ":?"} <= set(generated)
    assert all(generated[name] for name in used)
    values = [text for text in _strings(COMPOSE)]
    for default in envfile.KNOWN_DEFAULTS - {"loraflow", "admin"}:  # user names stay
        assert not any(default in text for text in values), default


def test_no_secret_is_on_a_command_line_of_the_stack():
    """Commands (``ps`` shows them) and healthchecks name no secret; values go by environment."""
    for name, service in SERVICES.items():
        for field in ("command", "entrypoint", "healthcheck"):
            for text in _strings(service.get(field, ())):
                found = [v for v, _ in REFERENCE.findall(text) if v in SECRET_NAMES]
                assert "$$" not in text and not found, f"{name}.{field}: {text}"


def test_compose_publishes_ports_on_loopback_unless_told():
    for name, service in SERVICES.items():
        for port in service.get("ports", ()):
            assert isinstance(port, str) and port.startswith(
                "${LORAFLOW_PUBLISH_ADDRESS:-127.0.0.1}:"
            ), f"{name} publishes {port} on every interface"
    assert "ports" not in SERVICES["postgres"]  # the stores are reached inside the network


def test_grafana_has_no_fixed_password_and_no_anonymous_viewers():
    env = SERVICES["grafana"]["environment"]
    assert REQUIRED.fullmatch(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env


def test_compose_authenticates_every_client_with_its_own_account():
    """Prefect and MLflow need credentials; each client gets only its account's secret."""
    server = SERVICES["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?")
    mlflow = SERVICES["mlflow"]
    assert "--app-name=loraflow-auth" in command_of(mlflow)
    auth_ini = mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    shipped = (INFRA / mounted[auth_ini]).read_text()
    database = "sqlite:////var/lib/mlflow-auth/auth.db"  # on the mlflow-auth volume
    assert shipped == accounts.auth_ini(database)
    assert mounted["/var/lib/mlflow-auth"] == "mlflow-auth"
    provision = SERVICES["mlflow-access"]
    assert command_of(provision)[:3] == ["loraflow", "access", "provision"]
    wanted = {a.password_env for a in accounts.SERVICE_ACCOUNTS} | {"MLFLOW_AUTH_ADMIN_PASSWORD"}
    assert set(provision["environment"]) == wanted
    clients = {"worker-cpu": accounts.WORKER, "worker-gpu": accounts.WORKER,
               "serve": accounts.SERVE}  # fmt: skip
    for name, account in clients.items():
        env = SERVICES[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == account.username
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith(f"${{{account.password_env}:?")
        secrets_held = {v for text in _strings(env) for v, _, _ in REFERENCE.findall(text)}
        allowed = {account.password_env, "PREFECT_AUTH_STRING", "LORAFLOW_FEEDBACK_TOKEN"}
        assert secrets_held & SECRET_NAMES <= allowed, (name, secrets_held)
        assert SERVICES[name]["depends_on"]["mlflow-access"] == {
            "condition": "service_completed_successfully"
        }
    assert "PREFECT_API_AUTH_STRING" not in SERVICES["serve"]["environment"]
    assert SERVICES["serve"]["environment"]["LORAFLOW_FEEDBACK_TOKEN"].startswith(
        "${LORAFLOW_FEEDBACK_TOKEN:?"
    )


PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "~/.docker/cli-plugins")  # fmt: skip


def _compose_command() -> list[str] | None:
    """Compose v2: ``docker compose``, or its plugin binary run on its own (no Docker CLI)."""
    candidates = [["docker", "compose"]] if shutil.which("docker") else []
    candidates += [[str(Path(d).expanduser() / "docker-compose")] for d in PLUGIN_DIRS]
    for command in candidates:
        try:
            done = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and " v2." in done.stdout:
            return command
    return None


def _compose(command: list[str], *args: str, env_file) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}  # no secrets
    return subprocess.run(
        [*command, "-f", str(INFRA / "compose.yaml"), "--env-file", str(env_file),
         "--profile", "gpu", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_docker_compose_config_fails_without_secrets_and_passes_with_them(tmp_path):
    """The real ``docker compose config`` (it interpolates and validates; no engine needed)."""
    compose = _compose_command()
    if compose is None:
        message = "Docker Compose v2 not installed (bash infra/install-compose.sh)"
        if os.environ.get("CI") == "true":  # CI can never pass by skipping
            pytest.fail(f"CI=true and {message}: .ci/run must install it", pytrace=False)
        pytest.skip(message)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = _compose(compose, "config", "--quiet", env_file=empty)
    assert refused.returncode != 0
    assert "required variable" in refused.stderr and "loraflow secrets init" in refused.stderr

    secrets = tmp_path / "secrets.env"
    made = subprocess.run(
        [str(REPO / ".venv/bin/loraflow"), "secrets", "init", str(secrets)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    values = envfile.read(secrets)
    assert not any(values[name] in made.stdout for name in SECRET_NAMES)  # shown masked
    accepted = _compose(compose, "config", "--format", "json", env_file=secrets)
    assert accepted.returncode == 0, accepted.stderr
    config = json.loads(accepted.stdout)
    services = config["services"]
    assert (
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        == (values["GRAFANA_ADMIN_PASSWORD"])
    )
    assert (
        services["worker-gpu"]["environment"]["MLFLOW_TRACKING_PASSWORD"]
        == (values["LORAFLOW_WORKER_PASSWORD"])
    )
    published = [p for s in services.values() for p in s.get("ports", ())]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)

    for name in ("GRAFANA_ADMIN_PASSWORD", "LORAFLOW_FEEDBACK_TOKEN"):  # one empty is enough
        one_empty = tmp_path / f"no-{name}.env"
        one_empty.write_text(envfile.render({**values, name: ""}))
        refused = _compose(compose, "config", "--quiet", env_file=one_empty)
        assert refused.returncode != 0 and name in refused.stderr


# The uid and gid of every loraflow image; Kubernetes runs the jobs as it, with it as fsGroup.
LORAFLOW_UID = 1000


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_run_as_one_non_root_uid(dockerfile):
    text = (INFRA / dockerfile).read_text()
    [useradd] = re.findall(r"useradd [^\n\\]*", text)
    assert f"--uid {LORAFLOW_UID}" in useradd and f"--gid {LORAFLOW_UID}" in useradd
    assert f"groupadd --gid {LORAFLOW_UID} loraflow" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users[-1] == f"{LORAFLOW_UID}:{LORAFLOW_UID}"  # numeric: runAsNonRoot can check it
    assert 'chown loraflow:loraflow "$LORAFLOW_HOME"' in text
    if dockerfile.endswith("cuda"):  # Ubuntu's stock user holds uid 1000 in the base image
        assert text.index("userdel --remove ubuntu") < text.index("useradd")


def test_kubernetes_job_runs_non_root_and_reads_credentials_from_a_secret():
    manifest = _rendered_job()
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == context["runAsGroup"] == LORAFLOW_UID
    assert context["fsGroup"] == LORAFLOW_UID  # the PVC (LORAFLOW_HOME) is made writable to it
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    secret = K8S_TEMPLATE["variables"]["properties"]["secret_name"]["default"]
    from_secret = {
        name: e["valueFrom"]["secretKeyRef"]["key"]
        for name, e in env.items()
        if "valueFrom" in e and e["valueFrom"]["secretKeyRef"]["name"] == secret
    }
    assert from_secret == {
        "MLFLOW_TRACKING_PASSWORD": accounts.WORKER.password_env,
        "PREFECT_API_AUTH_STRING": "PREFECT_AUTH_STRING",
    }
    assert set(from_secret.values()) <= SECRET_NAMES  # keys of the secrets file
    assert env["MLFLOW_TRACKING_USERNAME"]["value"] == accounts.WORKER.username
    plain = {name for name, e in env.items() if "value" in e}
    assert not plain & (SECRET_NAMES | set(from_secret)), "a secret as a plain value"
