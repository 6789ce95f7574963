"""Render the configuration reference (docs/configuration.md) from the schema's descriptions."""

from __future__ import annotations

import re

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tasks.core.config.audit import Approval, LicensePolicy
from tasks.core.config.canary import CanaryPolicy
from tasks.core.config.evaluation import GatePolicy, SliceSpec
from tasks.core.config.experiment import ExperimentConfig
from tasks.core.config.monitoring import MonitoringPolicy, Objective, SloPolicy


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append(f"| `{key}` | section | | {field.description or ''} |")
            rows += _rows(annotation, f"{key}.")
            continue
        if field.default is not PydanticUndefined:
            default = f"`{field.default!r}`"
        elif field.default_factory is not None:
            default = f"`{field.default_factory()!r}`"
        else:
            default = "required"
        kind = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        kind = kind.replace("typing.", "").replace("pathlib.", "").replace("|", "or")
        kind = re.sub(r"tasks\.core\.[\w.]+\.(\w+)", r"\1", kind)  # a model's name, not its path
        rows.append(f"| `{key}` | {kind} | {default} | {field.description or ''} |")
    return rows


def render() -> str:
    header = "| key | type | default | meaning |\n|---|---|---|---|"
    return "\n".join(
        [
            "# Configuration reference",
            "",
            "Generated from the schema (`tasks/core/config/experiment.py`) by `loraflow config-reference`;",
            "a test fails when this file and the schema disagree.",
            "",
            "## Experiment file (`configs/base.yaml`, `configs/experiments/*.yaml`)",
            "",
            "An experiment file may start with `extends: RELATIVE/PATH.yaml` and override only what",
            "differs; mappings merge key by key, lists and scalars replace. Relative paths resolve",
            "against the file that writes them.",
            "",
            header,
            *_rows(ExperimentConfig),
            "",
            "## Entry of `license.approvals`",
            "",
            header,
            *_rows(Approval),
            "",
            "## License policy (`configs/policies/licenses.yaml`)",
            "",
            header,
            *_rows(LicensePolicy),
            "",
            "## Entry of `gates.slices`",
            "",
            header,
            *_rows(SliceSpec),
            "",
            "## Gate policy (`configs/policies/gates.yaml`)",
            "",
            "Named by `gates.policy_file`; its `gates` are the defaults an experiment's `gates:`",
            "overrides key by key.",
            "",
            header,
            *_rows(GatePolicy),
            "",
            "## Monitoring policy (`configs/policies/monitoring.yaml`)",
            "",
            "What the service keeps of live traffic and each monitor finding's threshold",
            "(docs/operations.md, Monitoring and SLOs).",
            "",
            header,
            *_rows(MonitoringPolicy),
            "",
            "## SLO file (`configs/policies/slo.yaml`)",
            "",
            "Rendered into Prometheus rules by `loraflow slo-rules`. Entry of `objectives`:",
            "",
            header,
            *_rows(Objective),
            "",
            "The file:",
            "",
            header,
            *_rows(SloPolicy),
            "",
        ]
    )


def policy_reference() -> str:
    """The canary policy's keys as a Markdown table (docs/canary.md holds it; a test compares)."""
    header = "| key | type | default | meaning |\n|---|---|---|---|"
    return "\n".join([header, *_rows(CanaryPolicy)]) + "\n"
