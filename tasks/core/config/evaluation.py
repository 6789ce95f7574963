"""Schema of the evaluate-and-gate stage: what is measured and which gates a model must pass.

Gates come from a policy file (``configs/policies/gates.yaml``: the organisation's defaults)
and an experiment's ``gates:`` section that overrides it key by key; the loader merges the
two before validation, so ``GateSpec`` is always the effective set of gates of a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.config.generation import REFUSALS, FormatSpec, GenerationSpec
from tasks.core.config.spec import Spec

# Project metrics shipped as local ``evaluate`` modules (tasks/core/evaluation/metrics/NAME.py).
LOCAL_METRICS = (
    "accuracy",
    "macro_f1",
    "per_class",
    "ece",
    "confusion_matrix",
    "exact_match",
    "rouge_l",
)
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "per_class", "ece", "confusion_matrix")
# Higher is better: gated with a minimum, compared with the champion and the base model.
SCORE_METRICS = ("accuracy", "macro_f1")
# Causal-LM task metrics (tasks.core.evaluation.causal): minimums only.
TEXT_METRICS = ("exact_match", "rouge_l")
# Generation figures where higher is better: minimums, non-inferiority, gain over the base.
GENERATION_SCORES = ("exact_match", "rouge_l", "format_valid")
# Generation figures where lower is better: maximums.
GENERATION_CEILINGS = ("refusal_rate", "empty_rate", "loss", "perplexity")
PER_CLASS_METRIC = re.compile(r"^(precision|recall|f1)_(.+)$")
PER_CLASS_KINDS = ("precision", "recall", "f1")
# Lower is better: gated with a maximum (loss and perplexity: causal-LM runs).
CEILING_METRICS = (
    "ece",
    "latency_ms_per_example",
    "loss",
    "perplexity",
    "refusal_rate",
    "empty_rate",
)
COMPARED_METRICS = SCORE_METRICS + GENERATION_SCORES
HUB_METRIC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# Optimised serving forms (tasks/core/registry/serving_form.py), fastest first.
SERVING_FORMS = ("onnx-int8", "onnx-int8-token", "onnx-fp32")


class EvalSpec(Spec):
    batch_size: int = Field(64, ge=1, description="Examples per inference batch.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Compute precision of evaluation batches. 'auto': bf16 autocast where the "
        "hardware has native bf16 (a CUDA GPU, a CPU with AMX-BF16 or AVX512-BF16), fp32 "
        "elsewhere; the registered model serves its exact form at the same precision.",
    )
    metrics: tuple[str, ...] = Field(
        CLASSIFICATION_METRICS,
        min_length=1,
        description="Metrics computed with `evaluate`, combined: names of the project's local "
        f"modules ({', '.join(LOCAL_METRICS)}) load offline; any other name is a Hub metric "
        "(needs the network). Classification runs only; causal-lm runs compute the generation "
        "figures (exact_match, rouge_l, format_valid, refusal_rate, empty_rate, perplexity).",
    )
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="causal-lm: decoding on the eval split (pinned with the registered model).",
    )
    format: FormatSpec = Field(
        default_factory=FormatSpec, description="causal-lm: answer format check (format_valid)."
    )
    refusal_phrases: tuple[str, ...] = Field(
        REFUSALS,
        description="causal-lm: an answer starting with one of these (case-insensitive) counts "
        "as a refusal (refusal_rate).",
    )
    max_examples: int | None = Field(
        None, ge=1, description="causal-lm: generate for at most this many eval rows; None: all."
    )
    worst_examples: int = Field(
        20, ge=0, le=1000, description="causal-lm: rows of the worst-examples table artifact."
    )

    @field_validator("metrics")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if name not in LOCAL_METRICS and not HUB_METRIC_ID.match(name):
                raise ValueError(
                    f"{name!r} is neither a project metric ({', '.join(LOCAL_METRICS)}) "
                    "nor a Hub metric id"
                )
        if len(set(names)) != len(names):
            raise ValueError("a metric is listed twice")
        return names


class NonInferioritySpec(Spec):
    metrics: tuple[Literal[COMPARED_METRICS], ...] = Field(  # type: ignore[valid-type]
        SCORE_METRICS,
        description="Metrics on which the candidate must not be worse than the current champion "
        "scored on the same eval split in the same run; [] turns the gate off.",
    )
    margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Tolerated loss: the candidate passes with a figure >= champion - margin.",
    )


class BaseReferenceSpec(Spec):
    score: bool = Field(
        True, description="Also score the base model without the adapter, for reference."
    )
    min_gain: float | None = Field(
        None,
        ge=0,
        le=1,
        description="When set, a gate: the candidate must beat the base model by this much on "
        "`metrics`; none: the base figures are recorded, not gated.",
    )
    metrics: tuple[Literal[COMPARED_METRICS], ...] = Field(  # type: ignore[valid-type]
        ("accuracy",), description="Metrics the min_gain gate applies to."
    )

    @model_validator(mode="after")
    def _gain_needs_score(self) -> BaseReferenceSpec:
        if self.min_gain is not None and not self.score:
            raise ValueError("min_gain is set but score is false: the base model must be scored")
        return self


class GoldenSpec(Spec):
    path: Path | None = Field(
        None,
        description='JSONL of must-pass cases, one {"text": ..., "label": class name or id} '
        'per line (causal-lm: {"prompt": ..., "expected": answer} or {"prompt": ..., '
        '"contains": [substrings]}), relative to the file naming it; none: no golden gate.',
    )
    min_pass_rate: float = Field(
        1.0, ge=0, le=1, description="Share of golden cases the candidate must get right."
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"golden file not found: {path}")
        return path


class SliceSpec(Spec):
    name: str = Field(
        description="Slice name used in gate names and reports.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    )
    length_buckets: tuple[int, ...] | None = Field(
        None,
        description="Slice by text length in words at these increasing edges: [10, 25] gives "
        "<10, 10-24 and >=25 words.",
    )
    column: str | None = Field(
        None, description="Slice by the values of this column of the prepared eval split."
    )
    metric: Literal[COMPARED_METRICS] = Field(  # type: ignore[valid-type]
        "accuracy",
        description="Metric computed on every slice (causal-lm: exact_match, rouge_l, "
        "format_valid; length_buckets count the prompt's words).",
    )
    minimum: float = Field(ge=0, le=1, description="Minimum figure of every gated slice.")
    min_examples: int = Field(
        30,
        ge=1,
        description="Slices with fewer examples are reported, not gated (too noisy to judge).",
    )

    @model_validator(mode="after")
    def _one_way(self) -> SliceSpec:
        if (self.length_buckets is None) == (self.column is None):
            raise ValueError("set exactly one of length_buckets and column")
        edges = self.length_buckets or ()
        if any(e < 1 for e in edges) or list(edges) != sorted(set(edges)):
            raise ValueError("length_buckets must be increasing positive word counts")
        return self


class ServingFormSpec(Spec):
    enabled: bool = Field(
        True,
        description="Build an optimised serving form at registration (the LoRA merged into the "
        "base, exported to ONNX Runtime), gated on agreement with the exact model; `loraflow "
        "serve` uses it when it passed. Sequence classification only.",
    )
    candidates: tuple[Literal[SERVING_FORMS], ...] = Field(  # type: ignore[valid-type]
        ("onnx-int8-token", "onnx-fp32"),
        description="Forms tried in this order; the first that passes and is faster than the exact "
        "model is served. 'onnx-int8-token': int8 weights per channel and an int8 range per "
        "token (a text's answer does not depend on its batch); 'onnx-int8': int8 weights (ONNX "
        "Runtime dynamic quantization, per channel, one range per batch; fastest, least exact); "
        "'onnx-fp32': the merged model in fp32. [] builds none.",
    )
    min_agreement: float = Field(
        0.99,
        ge=0,
        le=1,
        description="Lowest share of eval-split examples on which the form predicts the exact "
        "model's label.",
    )
    max_accuracy_drop: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Largest accuracy loss of the form against the exact model on the eval "
        "split (0.005: half a point).",
    )

    @field_validator("candidates")
    @classmethod
    def _unique_forms(cls, forms: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(forms)) != len(forms):
            raise ValueError("a serving form is listed twice")
        return forms


class GateSpec(Spec):
    policy_file: Path | None = Field(
        None,
        description="Gate policy YAML whose `gates` are the defaults this section overrides key "
        "by key, relative to the file naming it; none: this section alone.",
    )
    absolute: dict[str, float] = Field(
        default_factory=dict,
        description=f"Minimum per metric ({', '.join(COMPARED_METRICS)}, "
        "precision_CLASS, recall_CLASS, f1_CLASS with CLASS one of data.labels) for "
        "registration.",
    )
    maximum: dict[str, float] = Field(
        default_factory=dict,
        description=f"Maximum per metric ({', '.join(CEILING_METRICS)}) for registration.",
    )
    non_inferiority: NonInferioritySpec = Field(
        default_factory=NonInferioritySpec,
        description="Candidate versus the current champion on the same eval split.",
    )
    base_model: BaseReferenceSpec = Field(
        default_factory=BaseReferenceSpec,
        description="The base model without the adapter, scored for reference.",
    )
    golden: GoldenSpec = Field(
        default_factory=GoldenSpec, description="Must-pass examples, compared with the champion."
    )
    slices: tuple[SliceSpec, ...] = Field(
        default_factory=tuple, description="Per-slice minimums (text length buckets or a column)."
    )
    serving_form: ServingFormSpec = Field(
        default_factory=ServingFormSpec,
        description="The optimised serving form's gate: agreement with the exact model and "
        "accuracy delta on the whole eval split.",
    )

    @field_validator("policy_file")
    @classmethod
    def _policy_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"gate policy file not found: {path}")
        return path

    @field_validator("absolute")
    @classmethod
    def _known_minimums(cls, gates: dict[str, float]) -> dict[str, float]:
        for metric, threshold in gates.items():
            allowed = COMPARED_METRICS
            if metric not in allowed and not PER_CLASS_METRIC.match(metric):
                raise ValueError(
                    f"unknown gate metric {metric!r}; allowed: {', '.join(allowed)}, "
                    "precision_CLASS, recall_CLASS, f1_CLASS"
                )
            if not 0 <= threshold <= 1:
                raise ValueError(f"gate {metric} = {threshold} is outside [0, 1]")
        return gates

    @field_validator("maximum")
    @classmethod
    def _known_ceilings(cls, gates: dict[str, float]) -> dict[str, float]:
        for metric, threshold in gates.items():
            if metric not in CEILING_METRICS:
                raise ValueError(
                    f"unknown maximum gate metric {metric!r}; allowed: {', '.join(CEILING_METRICS)}"
                )
            if threshold < 0 or (metric == "ece" and threshold > 1):
                raise ValueError(f"maximum {metric} = {threshold} is out of range")
        return gates

    @field_validator("slices")
    @classmethod
    def _unique_slices(cls, slices: tuple[SliceSpec, ...]) -> tuple[SliceSpec, ...]:
        names = [s.name for s in slices]
        if len(set(names)) != len(names):
            raise ValueError("slice names must be unique")
        return slices


class GatePolicy(Spec):
    """The content of a gate policy file (``configs/policies/gates.yaml``)."""

    kind: Literal["gate-policy"] = Field(description="Marks the file as a gate policy.")
    version: str = Field(description="Policy version, recorded with every gate decision.")
    gates: GateSpec = Field(description="Default gates; an experiment's `gates:` overrides them.")

    @field_validator("gates")
    @classmethod
    def _no_nesting(cls, gates: GateSpec) -> GateSpec:
        if gates.policy_file is not None:
            raise ValueError("a gate policy cannot name another policy_file")
        return gates
