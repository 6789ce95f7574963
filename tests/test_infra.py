"""Deployment files: they parse, validate against their schemas, and agree with each other.

No Docker engine or cluster runs here, so the compose file is checked against the Compose
Specification's JSON schema (vendored by check-jsonschema), the Kubernetes job template is
rendered the way a Prefect worker renders it and validated against the Kubernetes API
schema (kubernetes-validate), and every cross-reference (images, Dockerfiles, ports,
scrape targets, metric names, pools, configs) is followed to what it names.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import json
import re
import shlex
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tasks.core.config.loader import load_config
from tasks.core.ops import stack
from tests.conftest import REPO

INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
K8S_TEMPLATE = json.loads((INFRA / "kubernetes/gpu-base-job-template.json").read_text())
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")


def resolve(value: str) -> str:
    """Compose interpolation with the defaults the file declares (``${VAR:-default}``); a
    required value (``${VAR:?message}``, every secret) becomes ``<VAR>``."""
    return REQUIRED.sub(lambda m: f"<{m.group(1)}>", DEFAULT.sub(lambda m: m.group(2), value))


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [resolve(c) for c in command]


def test_prefect_deployments_reference_the_flow_and_valid_configs():
    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        load_config(REPO / deployment["parameters"]["config_path"])


def test_prefect_yaml_agrees_with_loraflow_deploy():
    """`prefect deploy --all` and `loraflow deploy CONFIG` register the same thing."""
    import prefect

    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    assert spec["prefect-version"] == prefect.__version__
    for deployment in spec["deployments"]:
        config = REPO / deployment["parameters"]["config_path"]
        plan = stack.deployment_plan(load_config(config).config, config, REPO)
        assert deployment["entrypoint"] == stack.ENTRYPOINT
        assert (deployment["name"], deployment["work_pool"]["name"]) == (plan.name, plan.work_pool)
        assert deployment["parameters"] == plan.parameters()
        assert deployment["schedules"] == [
            {"cron": plan.cron, "timezone": plan.timezone, "active": plan.active}
        ]
        assert set(deployment["tags"]) == set(plan.tags)
        assert deployment["description"] == plan.description
        triggers = [
            (t["name"], tuple(t["expect"]), t["match"]["prefect.resource.id"], t["parameters"])
            for t in deployment["triggers"]
        ]
        assert triggers == [
            (t.name, (t.event,), t.resource_id, plan.parameters(force=t.force))
            for t in plan.triggers
        ]


# -- compose -----------------------------------------------------------------------------------


def compose_schema() -> dict:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_compose_file_matches_the_compose_specification():
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []
    broken = copy.deepcopy(COMPOSE)  # the schema is strict enough to catch a typo
    broken["services"]["mlflow"]["depend_on"] = ["postgres"]
    assert not validator.is_valid(broken)


def test_compose_has_the_stack_services_and_ports():
    required = {
        "postgres", "minio", "minio-init", "prefect-server", "mlflow", "mlflow-access",
        "worker-cpu", "worker-gpu", "serve", "prometheus", "grafana",
    }  # fmt: skip
    assert required <= set(SERVICES)
    published = {
        name: {int(p.split(":")[-1]) for p in s.get("ports", ())} for name, s in SERVICES.items()
    }
    assert published["prefect-server"] == {4200}
    assert published["mlflow"] == {5000}
    assert published["serve"] == {8080}
    assert published["prometheus"] == {9090}
    assert published["grafana"] == {3000}
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", ()):
            source = resolve(volume.split(":")[0])
            if source.startswith("./"):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"


def test_compose_images_are_built_from_the_dockerfiles_once_and_reused():
    built = {}
    for name, service in SERVICES.items():
        if "build" in service:
            image = resolve(service["image"])
            dockerfile = INFRA.parent / service["build"]["dockerfile"]
            assert service["build"]["context"] == ".."
            assert dockerfile.is_file(), dockerfile
            flavour = dockerfile.suffix.lstrip(".")  # Dockerfile.cpu -> cpu
            assert image.startswith(f"loraflow-{flavour}:"), (name, image)
            assert image not in built, f"{image} is built twice"
            built[image] = dockerfile
            assert_installs_from_the_lock(dockerfile)
    assert {d.name for d in built.values()} == {"Dockerfile.cpu", "Dockerfile.cuda"}
    for name, service in SERVICES.items():
        image = resolve(service["image"])
        if image.startswith("loraflow-"):
            assert image in built, f"{name} uses {image}, which no service builds"
        else:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    [cuda] = [image for image, dockerfile in built.items() if dockerfile.name.endswith("cuda")]
    assert K8S_TEMPLATE["variables"]["properties"]["image"]["default"] == cuda


def assert_installs_from_the_lock(dockerfile) -> None:
    """Every ``pip install`` of the image is constrained by requirements.lock (torch included),
    the lock is copied in before the first one, and the project goes in with its extras."""
    text = dockerfile.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    installs = [line for line in lines if re.search(r"\bpip install\b", line)]
    assert installs, dockerfile
    for line in installs:
        assert "-c requirements.lock" in line, f"{dockerfile.name}: unlocked install: {line}"
    assert text.index("COPY requirements.lock ./") < text.index("RUN pip install")
    flavour = dockerfile.suffix.lstrip(".")
    [torch] = re.findall(r"^RUN pip install -c requirements\.lock .*\btorch$", text, re.M)
    # The CPU image takes the CPU build from PyTorch's index; the CUDA image PyPI's CUDA build.
    assert ("download.pytorch.org/whl/cpu" in torch) == (flavour == "cpu"), torch
    extras = {"cpu": '".[s3]"', "cuda": '".[gpu,s3]"'}[flavour]
    assert f"RUN pip install -c requirements.lock -e {extras}" in text
    assert "ARG TORCH_VERSION" not in text  # the lock is the one place torch's version lives
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for extra in ("s3", "gpu"):
        assert extra in pyproject["project"]["optional-dependencies"]


def test_compose_wires_postgres_minio_workers_and_the_service():
    database = SERVICES["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert resolve(database).startswith("postgresql+asyncpg://loraflow:")
    assert resolve(database).endswith("@postgres:5432/prefect")
    mlflow = command_of(SERVICES["mlflow"])
    assert mlflow[:2] == ["mlflow", "server"]
    # The store URI holds a password: by environment (click reads it), not on the command line.
    mlflow_env = SERVICES["mlflow"]["environment"]
    assert resolve(mlflow_env["MLFLOW_BACKEND_STORE_URI"]).endswith("@postgres:5432/mlflow")
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/"
    assert "--serve-artifacts" in mlflow
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert SERVICES["minio-init"]["command"] == ["mb", "--ignore-existing", "store/mlflow"]
    assert resolve(SERVICES["minio-init"]["environment"]["MC_HOST_store"]).endswith("@minio:9000")
    assert "CREATE DATABASE mlflow" in (INFRA / "postgres/init.sql").read_text()

    pools = {}
    for name in ("worker-cpu", "worker-gpu"):
        command = command_of(SERVICES[name])
        assert command[:3] == ["prefect", "worker", "start"]
        pools[command[command.index("--pool") + 1]] = name
        environment = SERVICES[name]["environment"]
        assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert set(pools) == set(stack.POOLS)
    gpu = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]

    serve = command_of(SERVICES["serve"])
    assert serve[:2] == ["loraflow", "serve"]
    models = {
        load_config(path).config.registry.model_name
        for path in (REPO / "configs/experiments").glob("*.yaml")
    }
    assert serve[2] in models
    assert serve[serve.index("--port") + 1] == "8080"


def test_prometheus_scrapes_the_service():
    config = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [target] = job["static_configs"][0]["targets"]
    service, port = target.split(":")
    assert service in SERVICES and port in SERVICES[service]["ports"][0]


def _served_metric_names() -> set[str]:
    from tasks.core.serving.telemetry import ServiceMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in ServiceMetrics().registry.collect():  # labelled series have no samples yet
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_grafana_dashboard_uses_the_provisioned_datasource_and_real_metrics():
    datasources = yaml.safe_load(
        (INFRA / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"]
    [datasource] = datasources
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (INFRA / "grafana/provisioning/dashboards/loraflow.yaml").read_text()
    )["providers"][0]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert (INFRA / mounted[provider["options"]["path"]]).is_dir()

    dashboard = json.loads((INFRA / "grafana/dashboards/loraflow-serving.json").read_text())
    job = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    served = _served_metric_names()
    assert served, "the service declares no metrics"
    referenced = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            assert f'job="{job["job_name"]}"' in target["expr"]
            referenced |= set(re.findall(r"\bloraflow_\w+", target["expr"]))
    assert referenced and referenced <= served, referenced - served
    assert {"loraflow_requests_total", "loraflow_request_latency_seconds_bucket"} <= referenced


# -- Kubernetes work pool ----------------------------------------------------------------------


def _rendered_job() -> dict:
    """The Job a Prefect kubernetes worker would create with the template's defaults."""
    from prefect.utilities.templating import apply_values, find_placeholders

    variables = K8S_TEMPLATE["variables"]["properties"]
    placeholders = {p.name for p in find_placeholders(K8S_TEMPLATE["job_configuration"])}
    assert placeholders <= set(variables), placeholders - set(variables)
    values = {k: v["default"] for k, v in variables.items() if "default" in v}
    values |= {"name": "loraflow-run", "command": "prefect flow-run execute"}
    rendered = apply_values(K8S_TEMPLATE["job_configuration"], values)
    manifest = rendered["job_manifest"]
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        container["args"] = shlex.split(container["args"])  # as the worker does:
        # the `env` variable's entries (Prefect's settings) go before the template's own list.
        env = [{"name": k, "value": v} for k, v in rendered["env"].items()]
        container["env"] = env + container["env"]
    return manifest


def test_kubernetes_template_renders_a_valid_gpu_job():
    manifest = _rendered_job()
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["image"] == K8S_TEMPLATE["variables"]["properties"]["image"]["default"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["restartPolicy"] == "Never" and manifest["spec"]["backoffLimit"] == 0


def test_kubernetes_validation_catches_a_broken_job():
    manifest = _rendered_job()
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.30", strict=True)
