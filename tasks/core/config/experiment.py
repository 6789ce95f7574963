"""The experiment schema: small frozen pydantic models, one per pipeline stage.

Each stage receives only its own section (``DiscoverySpec`` for discovery, ``TrainSpec`` +
``LoraSpec`` for training, ...), so a change to one section invalidates only the cached results
of the stages that read it. Every field carries a description: ``loraflow config-reference``
renders them into ``docs/configuration.md``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from tasks.core.config.audit import (
    DiscoverySpec,
    LicenseSpec,
)
from tasks.core.config.canary import (
    CanarySpec,
)
from tasks.core.config.data import DataSpec
from tasks.core.config.evaluation import (
    EvalSpec,
    GateSpec,
)
from tasks.core.config.schedule import ScheduleSpec
from tasks.core.config.spec import Spec
from tasks.core.config.train import LoraSpec, TrainSpec


class RegistrySpec(Spec):
    model_name: str = Field(
        description="Registered model name in MLflow.", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    experiment: str = Field("loraflow", description="MLflow experiment that holds the runs.")
    intended_use: str = Field(
        "", description="What the model is for and for whom; written into the model card."
    )
    limitations: tuple[str, ...] = Field(
        (), description="Known limits and out-of-scope uses; written into the model card."
    )


class ExperimentConfig(Spec):
    name: str = Field(description="Experiment name: names the flow run and the MLflow run.")
    description: str = Field("", description="Free text shown with the run.")
    discovery: DiscoverySpec = Field(
        default_factory=DiscoverySpec, description="Which model to fine-tune."
    )
    license: LicenseSpec = Field(description="License policy applied to the model and the data.")
    data: DataSpec = Field(description="Training and evaluation data.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation settings.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation settings.")
    gates: GateSpec = Field(default_factory=GateSpec, description="Registration gates.")
    registry: RegistrySpec = Field(description="Where the model is registered.")
    canary: CanarySpec = Field(
        default_factory=CanarySpec,
        description="Canary promotion of a challenger while a champion exists.",
    )
    schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec,
        description="Deployment: retraining cadence, work pool and event triggers.",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return name

    @model_validator(mode="after")
    def _task_fits_data(self) -> ExperimentConfig:
        """A causal LM trains on generative data, a classifier on labelled texts."""
        wanted = "generative" if self.train.task == "causal-lm" else "classification"
        if self.data.kind == wanted:
            return self
        how = {
            "generative": "prompt_column + response_column or messages_column",
            "classification": "text_column + label_column (and data.labels)",
        }
        raise ValueError(
            f"train.task {self.train.task} needs {wanted} data ({how[wanted]}), but data.train "
            f"maps {self.data.kind} columns; change train.task or the column mapping"
        )
