"""Deployment files point at code that exists and configs that validate."""

from __future__ import annotations

import importlib

import yaml

from tasks.core.config_loader import load_config
from tests.conftest import REPO


def test_prefect_deployments_reference_the_flow_and_valid_configs():
    spec = yaml.safe_load((REPO / "infra/prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        load_config(REPO / deployment["parameters"]["config_path"])
