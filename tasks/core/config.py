"""The experiment schema: small frozen pydantic models, one per pipeline stage.

Each stage receives only its own section (``DiscoverySpec`` for discovery, ``TrainSpec`` +
``LoraSpec`` for training, ...), so a change to one section invalidates only the cached results
of the stages that read it. Every field carries a description: ``loraflow config-reference``
renders them into ``docs/configuration.md``.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
GATE_METRICS = ("accuracy", "macro_f1")


class Spec(BaseModel):
    """Base of every config model: immutable, and unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscoverySpec(Spec):
    task: Literal["text-classification"] = Field(
        "text-classification",
        description="What the model is fine-tuned for; candidates must load for this task.",
    )
    repo_id: str | None = Field(
        None,
        description="Pin one model (ORG/NAME): skips the search but not the license audit.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    revision: str | None = Field(
        None, description="Branch or commit sha of the pinned model; default: refs/main."
    )
    max_parameters: int | None = Field(
        None, ge=1, description="Skip candidates with more parameters than this."
    )
    require_safetensors: bool = Field(
        True, description="Skip candidates whose weights exist only as pickle files."
    )
    max_candidates: int = Field(5, ge=1, description="How many ranked candidates to report.")

    @model_validator(mode="after")
    def _revision_needs_repo(self) -> DiscoverySpec:
        if self.revision and not self.repo_id:
            raise ValueError("'revision' is set but 'repo_id' is not: name the model to pin")
        return self


class Approval(Spec):
    subject: str = Field(description="What is approved: 'model:ORG/NAME' or 'dataset:NAME'.")
    license: str = Field(description="The license id approved for that subject (lower case).")
    approved_by: str = Field(min_length=1, description="Who approved it (name or e-mail).")
    date: str = Field(description="When (YYYY-MM-DD).", pattern=r"^\d{4}-\d{2}-\d{2}$")
    reason: str = Field(min_length=10, description="Why the use is acceptable.")

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value):
        """YAML reads an unquoted 2026-01-15 as a date; accept it as written."""
        return value.isoformat() if isinstance(value, datetime.date) else value


class LicenseSpec(Spec):
    policy_file: Path = Field(
        description="License policy YAML (allow / review / deny), relative to the file naming it."
    )
    approvals: tuple[Approval, ...] = Field(
        default_factory=tuple,
        description="Explicit sign-offs for licenses the policy puts under review.",
    )

    @field_validator("policy_file")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"policy file not found: {path}")
        return path


class LicensePolicy(Spec):
    """The content of a license policy file (``configs/policies/licenses.yaml``)."""

    kind: Literal["license-policy"] = Field(description="Marks the file as a license policy.")
    version: str = Field(description="Policy version, recorded with every verdict.")
    intended_use: Literal["commercial", "research"] = Field(
        description="What the fine-tuned models are used for."
    )
    allow: tuple[str, ...] = Field(description="License ids accepted without review (lower case).")
    review: tuple[str, ...] = Field(
        default_factory=tuple, description="License ids that pass only with an approval entry."
    )
    deny: tuple[str, ...] = Field(description="License ids refused outright (lower case).")

    @model_validator(mode="after")
    def _disjoint(self) -> LicensePolicy:
        lists = {"allow": self.allow, "review": self.review, "deny": self.deny}
        seen: dict[str, str] = {}
        for name, ids in lists.items():
            for license_id in ids:
                if license_id != license_id.lower():
                    raise ValueError(f"{name}: write license ids in lower case ({license_id!r})")
                if license_id in seen:
                    where = (
                        f"listed twice in {name}"
                        if seen[license_id] == name
                        else (f"in both {seen[license_id]} and {name}")
                    )
                    raise ValueError(f"{license_id!r} is {where}")
                seen[license_id] = name
        return self


class SplitSpec(Spec):
    path: Path = Field(description="Data file, relative to the config file that names it.")
    format: Literal[DATA_FORMATS] | None = Field(  # type: ignore[valid-type]
        None, description="File format; default: from the file suffix."
    )
    text_column: str = Field(description="Column holding the input text in this file.")
    label_column: str = Field(description="Column holding the label (class id or class name).")
    max_samples: int | None = Field(
        None, ge=1, description="Use a seeded random subset of this many rows (None: all rows)."
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"data file not found: {path}")
        return path

    @model_validator(mode="after")
    def _known_format(self) -> SplitSpec:
        if self.format is None and self.path.suffix.lstrip(".").lower() not in DATA_FORMATS:
            raise ValueError(
                f"cannot tell the format of {self.path.name}: set 'format' to one of "
                f"{', '.join(DATA_FORMATS)}"
            )
        return self

    @property
    def resolved_format(self) -> str:
        return self.format or self.path.suffix.lstrip(".").lower()


class DataSpec(Spec):
    name: str = Field(description="Dataset name recorded in lineage (e.g. 'sst2').")
    license: str | None = Field(
        None, description="License the local data is published under (recorded in the audit)."
    )
    labels: tuple[str, ...] = Field(
        min_length=2,
        description="Class names in id order; integer labels in the files index this list.",
    )
    train: SplitSpec = Field(description="Training split and its column mapping.")
    eval: SplitSpec = Field(description="Evaluation split and its column mapping.")
    seed: int = Field(0, description="Seed of the subset sampling.")

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(labels)) != len(labels):
            raise ValueError("class names must be unique")
        return labels


class LoraSpec(Spec):
    r: int = Field(8, ge=1, le=512, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: tuple[str, ...] | None = Field(
        None, description="Modules to adapt; default: PEFT's choice for the architecture."
    )


class TrainSpec(Spec):
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    learning_rate: float = Field(5e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per step.")
    max_length: int = Field(128, ge=8, description="Truncate inputs to this many tokens.")
    seed: int = Field(42, description="Seed of initialisation, dropout and batch order.")
    logging_steps: int = Field(10, ge=1, description="Log loss and learning rate every N steps.")


class EvalSpec(Spec):
    batch_size: int = Field(64, ge=1, description="Examples per inference batch.")


class GateSpec(Spec):
    absolute: dict[str, float] = Field(
        default_factory=dict,
        description=f"Minimum value per metric ({', '.join(GATE_METRICS)}) for registration.",
    )

    @field_validator("absolute")
    @classmethod
    def _known_metrics(cls, gates: dict[str, float]) -> dict[str, float]:
        for metric, threshold in gates.items():
            if metric not in GATE_METRICS:
                raise ValueError(
                    f"unknown gate metric {metric!r}; allowed: {', '.join(GATE_METRICS)}"
                )
            if not 0 <= threshold <= 1:
                raise ValueError(f"gate {metric} = {threshold} is outside [0, 1]")
        return gates


class RegistrySpec(Spec):
    model_name: str = Field(
        description="Registered model name in MLflow.", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    experiment: str = Field("loraflow", description="MLflow experiment that holds the runs.")


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

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return name
