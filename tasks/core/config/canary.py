"""Schema of the canary: the experiment's ``canary:`` section and the policy file it names.

The policy (``configs/policies/canary.yaml``) holds the organisation's rollout rules: traffic
steps, the thresholds each step is judged on, how held-out examples are replayed when no live
traffic exists, and the settings of the inference service the canary runs on. It is a file of
its own, like the license policy, so one reviewed file governs every experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tasks.core.config.spec import Spec


class CanarySpec(Spec):
    """The experiment's ``canary:`` section."""

    policy_file: Path | None = Field(
        None,
        description="Canary policy YAML, relative to the file naming it. Unset: no automatic "
        "canary; a challenger waits for `loraflow promote NAME` while a champion exists.",
    )

    @field_validator("policy_file")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"policy file not found: {path}")
        return path


class ServingSpec(Spec):
    """The inference service (`loraflow serve`, and the one a canary starts on loopback)."""

    max_batch_size: int = Field(
        32, ge=1, le=1024, description="Texts scored together in one forward pass at most."
    )
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="How long the first queued text waits for others to join its batch.",
    )
    max_body_bytes: int = Field(
        65_536, ge=256, description="Larger request bodies are refused with 413."
    )
    max_text_chars: int = Field(
        2_000, ge=1, description="Longer texts are refused with 422 (no silent truncation)."
    )
    max_texts: int = Field(64, ge=1, description="Texts one /predict request may carry at most.")
    max_new_tokens: int = Field(
        256, ge=1, le=4096, description="/generate: largest max_new_tokens a request may ask for."
    )
    max_queue: int = Field(
        64, ge=1, description="/generate: requests waiting at most; more are refused with 503."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="A prediction not done by then answers 504 (a model error)."
    )
    poll_seconds: float = Field(
        2.0,
        gt=0,
        le=300,
        description="How often the service reads the registry's aliases and canary weight.",
    )
    challenger_percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Share of request keys routed to the challenger while no canary sets one.",
    )
    shadow_champion: bool = Field(
        True,
        description="Also score challenger-routed texts with the champion (answer unchanged) to "
        "measure agreement on the same inputs.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Predict threads per model version, each scoring its own batch (with "
        "torch_threads each): use the cores without oversubscribing any.",
    )
    torch_threads: int = Field(
        1,
        ge=0,
        description="Intra-op threads of each model's predict thread (0: torch's default, one per "
        "core). Batching gives the throughput; more threads oversubscribe shared cores.",
    )
    predict_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of the predict threads below the event loop's (Linux nice; 0: "
        "same): under load the loop keeps accepting requests, so batches fill up instead of "
        "requests waiting unread while scoring takes every core.",
    )
    feedback_window: int = Field(
        100_000,
        ge=1,
        description="Recent predictions kept for POST /feedback; older ids answer 404.",
    )


class CanaryAnalysis(Spec):
    """What every step is judged on: the challenger against the champion over the step."""

    min_requests: int = Field(
        20,
        ge=1,
        description="Requests each model must serve in a step (the champion only below 100 %); "
        "fewer is a failed check, not a pass.",
    )
    interval_seconds: float = Field(
        0.0,
        ge=0,
        description="Shortest duration of a step, for live traffic to accumulate; replay stops "
        "earlier once it has enough requests.",
    )
    settle_seconds: float = Field(
        120.0,
        gt=0,
        description="How long to wait for the service to load the models and apply a weight.",
    )
    lease_seconds: float = Field(
        60.0,
        ge=5,
        description="How long the challenger's traffic share holds without renewal. The promotion "
        "flow renews it every third of this while it runs; if the flow dies, every replica routes "
        "all traffic back to the champion once it expires (and records the abort).",
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Highest share of challenger requests that may fail."
    )
    max_p95_latency_ratio: float = Field(
        1.5, ge=1, description="Highest challenger p95 latency as a multiple of the champion's."
    )
    p95_latency_tolerance_ms: float = Field(
        25.0,
        ge=0,
        description="A p95 difference below this never fails the ratio check (timer noise of "
        "millisecond latencies).",
    )
    max_p95_latency_ms: float | None = Field(
        None, gt=0, description="Highest challenger p95 latency in ms, whatever the champion's."
    )
    min_agreement: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Lowest agreement of the challenger with the champion on the same inputs "
        "(shadow): share of equal answers, or mean ROUGE-L with agreement_metric rouge_l.",
    )
    agreement_metric: Literal["exact_match", "rouge_l"] = Field(
        "exact_match",
        description="How agreement is measured: exact_match (same label / same answer) or "
        "rouge_l (mean ROUGE-L F1 of challenger vs champion answers; /generate only).",
    )
    min_feedback: int = Field(
        20,
        ge=1,
        description="Labelled outcomes each model needs before online accuracy is judged; fewer "
        "skips the check.",
    )
    max_accuracy_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="How far the challenger's online accuracy may fall below the champion's.",
    )


class ReplaySpec(Spec):
    """Held-out examples sent through the live endpoint when there is no live traffic."""

    enabled: bool = Field(
        True,
        description="Replay the challenger's eval split through HTTP at every step (off: judge "
        "live traffic only).",
    )
    max_requests: int = Field(
        2_000, ge=1, description="Requests one step sends at most (examples repeat in turn)."
    )
    max_seconds: float = Field(60.0, gt=0, description="How long one step replays at most.")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    max_examples: int = Field(
        1_000, ge=1, description="Examples read from the eval split (the first N)."
    )
    post_feedback: bool = Field(
        True, description="Post each example's known label to /feedback (online accuracy)."
    )


class CanaryPolicy(Spec):
    """The content of a canary policy file (``configs/policies/canary.yaml``)."""

    kind: Literal["canary-policy"] = Field(description="Marks the file as a canary policy.")
    version: str = Field(description="Policy version, recorded with every canary.")
    steps: tuple[float, ...] = Field(
        (10.0, 50.0, 100.0),
        min_length=1,
        description="Challenger traffic share per step, percent, increasing, ending at 100.",
    )
    analysis: CanaryAnalysis = Field(
        default_factory=CanaryAnalysis, description="Checks and thresholds of every step."
    )
    replay: ReplaySpec = Field(default_factory=ReplaySpec, description="Traffic when none is live.")
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="The service the canary runs on."
    )

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"every step is a percentage in (0, 100]; got {list(steps)}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must increase; got {list(steps)}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100 (full traffic); got {steps[-1]}")
        return steps
