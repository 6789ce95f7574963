"""A registry with two tiny (untrained) versions and a live service on loopback."""

from __future__ import annotations

import pytest

from tasks.core.config.canary import ServingSpec
from tasks.core.serving.runner import BackgroundServer, build_service
from tasks.core.tracking import client
from tests.flows.conftest import mirrored  # noqa: F401 - a fixture
from tests.serving.models import register_version, untrained_adapter

NAME = "tiny-serve"
FAST = ServingSpec(poll_seconds=0.1, max_wait_ms=5, request_timeout_s=20)


@pytest.fixture
def registry(home, mirrored, tmp_path):  # noqa: F811
    """(client, [v1, v2]) with champion -> v1; two heads, so the versions disagree somewhere."""
    mlc = client(home.tracking_uri)
    versions = [
        register_version(
            mlc, NAME, untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / f"a{s}", s)
        )
        for s in (1, 2)
    ]
    mlc.set_registered_model_alias(NAME, "champion", versions[0])
    return mlc, versions


def start(home, spec: ServingSpec = FAST, name: str = NAME) -> BackgroundServer:
    return BackgroundServer(build_service(name, spec, home.tracking_uri))
