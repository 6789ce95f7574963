"""The monitor's findings: live window against reference profile, staleness, online accuracy.

Every check is a plain two-sample test from scipy (Evidently is not in the locked install, and
its tests for these data types are the same ones: Kolmogorov-Smirnov for numeric columns,
chi-square for categories): a finding has its figure, the policy threshold and a verdict. A
drift breach needs both a significant p-value *and* an effect above the threshold, so a large
window does not flag a harmless shift. Breaches name the event that starts retraining:
``drift.detected`` for drift and accuracy decay, ``model.stale`` for age.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

from tasks.core.config.monitoring import MonitoringPolicy
from tasks.core.monitoring.profile import ReferenceProfile, Stats

PASS, BREACH, SKIP = "pass", "breach", "skip"
DRIFT, STALE = "drift.detected", "model.stale"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: str  # pass | breach | skip
    figure: float | None
    threshold: float | None
    detail: str
    p_value: float | None = None
    event: str | None = None  # the event a breach emits

    def line(self) -> str:
        figure = "-" if self.figure is None else f"{self.figure:.4f}"
        threshold = "" if self.threshold is None else f" (threshold {self.threshold:g})"
        return f"{self.check}: {self.verdict} {figure}{threshold}: {self.detail}"


@dataclass(frozen=True)
class Feedback:
    count: int
    correct: int


# Confidences closer than this on average (Wasserstein distance) are the same: the reference
# comes from the evaluation's pass (bf16 autocast where the CPU has it), live ones from the
# served form (ONNX fp32, other batch shapes). On a narrow distribution (an untrained head at
# 0.507 +- 0.001) that numeric noise alone is a "significant" KS statistic; drift moves
# confidences by points, not thousandths.
CONFIDENCE_NOISE = 0.005


def _ks(check: str, ref, live, policy: MonitoringPolicy, what: str, noise: float = 0.0) -> Finding:
    d = policy.drift
    if len(ref) < 2 or len(live) < 2:
        return Finding(check, SKIP, None, d.max_ks, f"no {what} recorded")
    ref, live = np.asarray(ref, float), np.asarray(live, float)
    result = scipy_stats.ks_2samp(ref, live)
    breach = result.statistic > d.max_ks and result.pvalue < d.p_value
    detail = (
        f"KS {result.statistic:.3f} (p={result.pvalue:.2g}); {what} median "
        f"{np.median(ref):.3g} -> {np.median(live):.3g}"
    )
    moved = float(scipy_stats.wasserstein_distance(ref, live)) if noise else 0.0
    if breach and moved < noise:
        breach = False
        detail += f"; within numeric noise (mean shift {moved:.4f} < {noise})"
    return Finding(
        check, BREACH if breach else PASS, float(result.statistic), d.max_ks, detail,
        float(result.pvalue), DRIFT if breach else None,
    )  # fmt: skip


def prediction_shift(ref: Stats, live: Stats, policy: MonitoringPolicy) -> Finding:
    d = policy.drift
    labels = list(ref.labels)
    expected = np.array([ref.shares()[k] for k in labels])
    observed = np.array([live.predictions.get(k, 0) for k in labels], dtype=float)
    tvd = 0.5 * float(np.abs(expected - observed / max(observed.sum(), 1)).sum())
    smoothed = (expected * observed.sum() + 0.5) / (observed.sum() + 0.5 * len(labels))
    smoothed *= observed.sum() / smoothed.sum()
    p = float(scipy_stats.chisquare(observed, smoothed).pvalue) if len(labels) > 1 else 1.0
    breach = tvd > d.max_prediction_shift and p < d.p_value
    shares = ", ".join(f"{k} {expected[i]:.2f}->{observed[i] / max(observed.sum(), 1):.2f}"
                       for i, k in enumerate(labels))  # fmt: skip
    return Finding(
        "prediction_shift", BREACH if breach else PASS, tvd, d.max_prediction_shift,
        f"total variation {tvd:.3f}, chi-square p={p:.2g}; {shares}", p, DRIFT if breach else None,
    )  # fmt: skip


def oov_shift(ref: Stats, live: Stats, policy: MonitoringPolicy) -> Finding:
    limit = policy.drift.max_oov_increase
    if ref.oov_rate is None or live.oov_rate is None:
        return Finding("oov_rate", SKIP, None, limit, "no words or no reference vocabulary")
    increase = live.oov_rate - ref.oov_rate
    breach = increase > limit
    return Finding(
        "oov_rate", BREACH if breach else PASS, increase, limit,
        f"out-of-vocabulary words {ref.oov_rate:.3f} -> {live.oov_rate:.3f} of {live.words}",
        None, DRIFT if breach else None,
    )  # fmt: skip


def embedding_shift(ref: Stats, live: Stats, policy: MonitoringPolicy) -> Finding:
    d = policy.drift
    if not ref.sketches or not live.sketches:
        why = "an ONNX serving form outputs logits only, a version before profiles has none"
        return Finding("embedding", SKIP, None, d.max_ks, f"no embedding sketches recorded ({why})")
    a, b = np.asarray(ref.sketches, float), np.asarray(live.sketches, float)
    tests = [scipy_stats.ks_2samp(a[:, i], b[:, i]) for i in range(a.shape[1])]
    worst = max(range(len(tests)), key=lambda i: tests[i].statistic)
    stat = float(tests[worst].statistic)
    p = min(1.0, float(tests[worst].pvalue) * len(tests))  # Bonferroni over the axes
    breach = stat > d.max_ks and p < d.p_value
    return Finding(
        "embedding", BREACH if breach else PASS, stat, d.max_ks,
        f"largest KS over {len(tests)} sketch axes: {stat:.3f} on axis {worst} "
        f"(Bonferroni p={p:.2g})", p, DRIFT if breach else None,
    )  # fmt: skip


def staleness(days: float | None, policy: MonitoringPolicy) -> Finding:
    limit = policy.quality.max_days_since_validation
    if days is None:
        return Finding("staleness", SKIP, None, limit, "no validation time recorded")
    breach = days > limit
    return Finding(
        "staleness", BREACH if breach else PASS, days, limit,
        f"{days:.1f} days since the version was validated", None, STALE if breach else None,
    )  # fmt: skip


def online_accuracy(
    feedback: Feedback, evaluated: float | None, policy: MonitoringPolicy
) -> Finding:
    q = policy.quality
    if evaluated is None or feedback.count < q.min_feedback:
        why = "no evaluation accuracy" if evaluated is None else f"{feedback.count} outcomes"
        return Finding("online_accuracy", SKIP, None, q.max_accuracy_drop,
                       f"{why} (needs {q.min_feedback})")  # fmt: skip
    online = feedback.correct / feedback.count
    drop = evaluated - online
    breach = drop > q.max_accuracy_drop
    return Finding(
        "online_accuracy", BREACH if breach else PASS, drop, q.max_accuracy_drop,
        f"accuracy {evaluated:.3f} at evaluation -> {online:.3f} online on {feedback.count} "
        "outcomes", None, DRIFT if breach else None,
    )  # fmt: skip


def drift_findings(ref: Stats, live: Stats | None, policy: MonitoringPolicy) -> list[Finding]:
    """The five distribution checks; skipped (with the reason) below ``min_window`` inputs."""
    checks = ("prediction_shift", "confidence", "input_length", "oov_rate", "embedding")
    count = live.count if live else 0
    if live is None or count < policy.drift.min_window:
        why = f"{count} live inputs (needs {policy.drift.min_window})"
        return [Finding(c, SKIP, None, None, why) for c in checks]
    live_tokens = [t for t in live.tokens if t > 0]
    return [
        prediction_shift(ref, live, policy),
        _ks("confidence", ref.confidence, live.confidence, policy, "confidence", CONFIDENCE_NOISE),
        _ks("input_length", ref.tokens, live_tokens, policy, "token length"),
        oov_shift(ref, live, policy),
        embedding_shift(ref, live, policy),
    ]


@dataclass(frozen=True)
class MonitorReport:
    model: str
    version: str
    policy_version: str
    live_count: int
    findings: tuple[Finding, ...]

    @property
    def breaches(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == BREACH]

    @property
    def outcome(self) -> str:
        return "breach" if self.breaches else "ok"

    def events(self) -> list[str]:
        return sorted({f.event for f in self.breaches if f.event})

    def reason(self) -> str:
        if not self.breaches:
            return f"no breach over {self.live_count} live inputs"
        return "; ".join(f.line() for f in self.breaches)

    def figures(self) -> dict[str, float]:
        return {f"monitor_{f.check}": f.figure for f in self.findings if f.figure is not None}

    def to_dict(self) -> dict:
        return asdict(self) | {"outcome": self.outcome, "events": self.events()}

    def to_markdown(self) -> str:
        rows = [
            f"| {f.check} | {f.verdict} | {'-' if f.figure is None else f'{f.figure:.4f}'} | "
            f"{'-' if f.threshold is None else f'{f.threshold:g}'} | {f.detail} |"
            for f in self.findings
        ]
        return "\n".join(
            [
                f"## Monitor `{self.model}` v{self.version}: {self.outcome}",
                "",
                f"{self.live_count} live inputs; policy {self.policy_version}; events: "
                f"{', '.join(self.events()) or 'none'}",
                "",
                "| check | verdict | figure | threshold | detail |",
                "|---|---|---|---|---|",
                *rows,
            ]
        )


def monitor(
    model: str,
    version: str,
    reference: ReferenceProfile | None,
    live: Stats | None,
    feedback: Feedback,
    days_since_validation: float | None,
    policy: MonitoringPolicy,
) -> MonitorReport:
    findings: list[Finding] = []
    if reference is None:
        findings.append(Finding("reference", SKIP, None, None, "no reference profile recorded"))
    else:
        findings += drift_findings(reference.stats, live, policy)
    evaluated = reference.accuracy if reference else None
    findings.append(online_accuracy(feedback, evaluated, policy))
    findings.append(staleness(days_since_validation, policy))
    count = live.count if live else 0
    return MonitorReport(model, version, policy.version, count, tuple(findings))
