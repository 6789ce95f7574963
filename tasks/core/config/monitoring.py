"""Schema of the monitoring policy and the SLO file (``configs/policies/``).

The monitoring policy says what the service keeps of live traffic (a window of features per
version, never raw text unless ``sample_inputs`` asks for a redacted sample) and the threshold
of every finding the monitor reports: drift of predictions, confidence, input lengths, OOV rate
and the embedding sketch, staleness, and online accuracy. The SLO file holds the objectives
rendered into Prometheus recording and burn-rate alert rules (``tasks/core/monitoring/slo.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.core.config.spec import Spec


class LiveSpec(Spec):
    """What the service keeps of served inputs, per version."""

    window: int = Field(
        500, ge=10, le=100_000, description="Served inputs per version kept for the monitor."
    )
    sample_inputs: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Redacted input texts kept per version for inspection (0: none, the "
        "default: raw or redacted text is never stored unless this is set).",
    )
    pii_kinds: tuple[
        Literal["secret", "email", "iban", "credit_card", "ip_address", "phone"], ...
    ] = Field(
        ("secret", "email", "iban", "credit_card", "ip_address", "phone"),
        description="PII kinds redacted from sampled texts (tasks/core/data/pii.py).",
    )


class DriftThresholds(Spec):
    """A test flags drift when its p-value is below ``p_value`` and its effect is large."""

    min_window: int = Field(
        100, ge=10, description="Fewer live inputs than this: drift is not judged (skip)."
    )
    p_value: float = Field(
        0.001, gt=0, lt=1, description="Significance of each two-sample test (KS, chi-square)."
    )
    max_ks: float = Field(
        0.15,
        gt=0,
        le=1,
        description="KS statistic (largest CDF gap) above which a numeric distribution drifted "
        "(lengths, confidence, each embedding-sketch axis).",
    )
    max_prediction_shift: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Total variation distance between reference and live predicted-class shares.",
    )
    max_oov_increase: float = Field(
        0.10,
        gt=0,
        le=1,
        description="Live out-of-vocabulary word share may exceed the reference's by this much.",
    )


class QualityThresholds(Spec):
    max_days_since_validation: float = Field(
        30, gt=0, description="A version validated longer ago than this is stale."
    )
    min_feedback: int = Field(
        30, ge=1, description="Labelled outcomes needed before online accuracy is judged."
    )
    max_accuracy_drop: float = Field(
        0.10,
        gt=0,
        le=1,
        description="Online accuracy may trail the version's evaluation accuracy by this much.",
    )


class MonitoringPolicy(Spec):
    """``configs/policies/monitoring.yaml``."""

    kind: Literal["monitoring-policy"] = Field(description="Marks the file as a monitoring policy.")
    version: str = Field(description="Policy version, recorded with every monitor report.")
    cron: str = Field("0 * * * *", description="Schedule of the monitor deployment (cron).")
    live: LiveSpec = Field(default_factory=LiveSpec, description="What the service keeps.")
    drift: DriftThresholds = Field(
        default_factory=DriftThresholds, description="Drift tests' thresholds."
    )
    quality: QualityThresholds = Field(
        default_factory=QualityThresholds, description="Staleness and online accuracy."
    )


class Objective(Spec):
    """One service level objective over a rolling period."""

    name: Literal["availability", "latency", "quality"] = Field(description="Which SLI.")
    target: float = Field(gt=0, lt=1, description="Share of good events, e.g. 0.999.")
    threshold_seconds: float | None = Field(
        None, gt=0, description="Latency only: a request under this many seconds is good."
    )
    runbook: str = Field(description="Section anchor in docs/operations.md for its alerts.")


class SignalAlerts(Spec):
    """Alerts on single signals that no SLO covers, each with its runbook section."""

    max_oov_ratio: float = Field(
        0.30,
        gt=0,
        le=1,
        description="Out-of-vocabulary word share of served inputs over 1h above which "
        "LoraflowInputOovHigh fires (a tokenizer mismatch or a new domain).",
    )
    max_rejected_ratio: float = Field(
        0.20,
        gt=0,
        le=1,
        description="Refused requests per served request over 15m above which "
        "LoraflowRejectedInputSpike fires (malformed or hostile input).",
    )


class SloPolicy(Spec):
    """``configs/policies/slo.yaml``: objectives rendered into Prometheus rules."""

    kind: Literal["slo-policy"] = Field(description="Marks the file as an SLO file.")
    version: str = Field(description="SLO file version, written into the rendered rules.")
    service: str = Field("loraflow", description="Value of the `service` label on every rule.")
    period_days: int = Field(30, ge=1, le=90, description="Error budget period.")
    objectives: tuple[Objective, ...] = Field(description="One per SLI, each name once.")
    signals: SignalAlerts = Field(
        default_factory=SignalAlerts, description="Thresholds of the single-signal alerts."
    )

    @field_validator("objectives")
    @classmethod
    def _once_each(cls, objectives: tuple[Objective, ...]) -> tuple[Objective, ...]:
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"each objective once; got {names}")
        for o in objectives:
            if (o.name == "latency") != (o.threshold_seconds is not None):
                raise ValueError("threshold_seconds is set on the latency objective only")
        return objectives
