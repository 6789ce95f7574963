"""Docs generated from code stay in step with it."""

from __future__ import annotations

from tasks.core.config.reference import render
from tests.conftest import REPO


def test_configuration_reference_is_current():
    on_disk = (REPO / "docs/configuration.md").read_text()
    assert on_disk == render(), "run: loraflow config-reference > docs/configuration.md"


def test_every_schema_field_has_a_description():
    from pydantic import BaseModel

    from tasks.core.config import experiment as config

    models = [
        m for m in vars(config).values() if isinstance(m, type) and issubclass(m, config.Spec)
    ]
    assert len(models) >= 10
    missing = [
        f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description
    ]
    assert missing == []
    assert all(
        m.model_config.get("extra") == "forbid" and m.model_config.get("frozen") for m in models
    )
    assert issubclass(config.ExperimentConfig, BaseModel)
