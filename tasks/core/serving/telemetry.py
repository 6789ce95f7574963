"""Prometheus series of the service, labelled by model version, and a parser for scrapes.

Every series a canary judges is labelled ``version`` (the registry's version number), so a
step's figures are counter differences between two scrapes of ``/metrics``: the same data a
Prometheus server would hold, read without one. Input the service refuses (empty, oversize,
wrong type) is counted apart, by reason, never as a model's error.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

# 1 ms .. ~25 s in steps of x1.5: fine enough to compare millisecond p95s by interpolation.
LATENCY_BUCKETS = tuple(round(0.001 * 1.5**k, 6) for k in range(26))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class ServiceMetrics:
    """The service's series in a registry of its own (several services may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "loraflow_requests",
            "Predict requests served, by model version.",
            ["version"],
            registry=r,
        )
        self.errors = Counter(
            "loraflow_errors",
            "Predict requests that failed inside the model (5xx), by version.",
            ["version"],
            registry=r,
        )
        self.latency = Histogram(
            "loraflow_request_latency_seconds",
            "Time from routing to answer of a predict request (queue wait included).",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "loraflow_predictions",
            "Texts scored, by version and predicted class.",
            ["version", "label"],
            registry=r,
        )
        self.batch_size = Histogram(
            "loraflow_batch_size",
            "Texts per forward pass.",
            ["version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.agreement = Counter(
            "loraflow_shadow_agreement",
            "Challenger texts also scored by the champion: same label or not.",
            ["version", "champion", "agree"],
            registry=r,
        )
        self.feedback = Counter(
            "loraflow_feedback",
            "Labelled outcomes received for a version's predictions (served or shadow).",
            ["version", "correct"],
            registry=r,
        )
        self.rejected = Counter(
            "loraflow_rejected_requests",
            "Requests refused before reaching a model (4xx), by reason.",
            ["reason"],
            registry=r,
        )
        self.loaded = Gauge(
            "loraflow_model_loaded",
            "1 for each loaded version, by role and served form (exact, onnx-int8, onnx-fp32).",
            ["version", "role", "form"],
            registry=r,
        )
        self.weight = Gauge(
            "loraflow_challenger_percent",
            "Share of request keys routed to the challenger.",
            registry=r,
        )
        self.swaps = Counter(
            "loraflow_model_swaps", "Times a new version was swapped in.", ["role"], registry=r
        )
        self.lease_expired = Counter(
            "loraflow_canary_lease_expired",
            "Canary leases seen expired (the promotion flow stopped renewing): traffic back "
            "to the champion.",
            registry=r,
        )

        self.tokens = Histogram(
            "loraflow_input_tokens",
            "Tokens per served input (before truncation), by version: input length drift.",
            ["version"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "loraflow_prediction_confidence",
            "Probability of the predicted class, by version: confidence drift.",
            ["version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.words = Counter(
            "loraflow_input_words", "Words in served inputs, by version.", ["version"], registry=r
        )
        self.oov_words = Counter(
            "loraflow_input_oov_words",
            "Words of served inputs absent from the version's training vocabulary.",
            ["version"],
            registry=r,
        )

    def observe_inputs(self, version: str, results, feats) -> None:
        """The drift panel's series: confidence always; lengths and OOV when the model gives
        features (versions registered before reference profiles give none)."""
        for _, score in results:
            self.confidence.labels(version).observe(score)
        for f in feats or ():
            self.tokens.labels(version).observe(f.tokens)
            self.words.labels(version).inc(f.words)
            self.oov_words.labels(version).inc(f.oov)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_snapshot(text: str) -> Snapshot:
    """{(sample name, sorted label pairs): value} of a Prometheus text exposition."""
    snapshot: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            snapshot[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return snapshot
