"""Canary analysis and decision: pure functions over two scrapes of the service's metrics.

A step's figures are counter differences between the scrape before and the scrape after the
step, per model version (Prometheus semantics, without a Prometheus server). The decision is
table-driven: every check has a figure, a threshold and a verdict; any failed check rolls the
challenger back at once, all passing at the last step promotes it, otherwise the canary
continues to the next step. Health (errors, latency) and quality (agreement with the
champion on the same inputs: exact match, or mean ROUGE-L of generated answers; online
accuracy from labelled feedback) are judged alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from tasks.core.config.canary import CanaryAnalysis

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Outcome = Literal["continue", "promote", "rollback"]
LATENCY = "loraflow_request_latency_seconds_bucket"


@dataclass(frozen=True)
class VersionFigures:
    """What one version did during one step."""

    version: str
    requests: float = 0.0
    errors: float = 0.0
    p95_ms: float | None = None
    classes: dict[str, float] = field(default_factory=dict)
    feedback: float = 0.0
    correct: float = 0.0
    references: float = 0.0  # /generate: reference answers received, and their ROUGE-L sum
    rouge_l: float = 0.0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def online_accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    @property
    def online_rouge_l(self) -> float | None:
        return self.rouge_l / self.references if self.references else None


@dataclass(frozen=True)
class CanaryCheck:
    name: str
    passed: bool | None  # None: not judged (no data for an optional check)
    figure: float | None
    threshold: str
    detail: str = ""

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.passed]

    def line(self) -> str:
        figure = "n/a" if self.figure is None else f"{self.figure:.4g}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.name} = {figure}, needs {self.threshold}{detail}"


@dataclass(frozen=True)
class StepAnalysis:
    step: int  # 1-based
    percent: float
    challenger: VersionFigures
    champion: VersionFigures
    compared: float  # challenger texts the champion also scored
    agreed: float
    checks: tuple[CanaryCheck, ...]
    outcome: Outcome

    @property
    def failed(self) -> list[CanaryCheck]:
        return [c for c in self.checks if c.passed is False]

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def reason(self) -> str:
        where = f"step {self.step} ({self.percent:g} %)"
        if self.failed:
            return f"{where}: " + "; ".join(c.line() for c in self.failed)
        passed = sum(1 for c in self.checks if c.passed)
        return f"{where}: {passed} checks passed" + (
            ", promoting" if self.outcome == "promote" else ""
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data |= {"agreement": self.agreement, "reason": self.reason}
        for side in ("challenger", "champion"):
            figures: VersionFigures = getattr(self, side)
            data[side] |= {
                "error_rate": figures.error_rate,
                "online_accuracy": figures.online_accuracy,
                "online_rouge_l": figures.online_rouge_l,
            }
        data["checks"] = [asdict(c) | {"verdict": c.verdict} for c in self.checks]
        return data


def _delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    """Sum of after - before over the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for (sample, pairs), value in after.items():
        if sample != name:
            continue
        have = dict(pairs)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value - before.get((sample, pairs), 0.0)
    return total


def shadow_compared(before: Snapshot, after: Snapshot, challenger: str, champion: str) -> float:
    """Texts the challenger answered that the champion also scored (shadow), between scrapes."""
    return _delta(
        before, after, "loraflow_shadow_agreement_total", version=challenger, champion=champion
    )


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: linear interpolation inside the bucket holding rank ``q``."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def version_figures(before: Snapshot, after: Snapshot, version: str) -> VersionFigures:
    buckets: dict[float, float] = {}
    for (sample, pairs), _ in after.items():
        labels = dict(pairs)
        if sample == LATENCY and labels.get("version") == version:
            bound = float(labels["le"])
            buckets[bound] = _delta(before, after, LATENCY, version=version, le=labels["le"])
    p95 = histogram_quantile(0.95, list(buckets.items()))
    classes = {}
    for (sample, pairs), _ in after.items():
        labels = dict(pairs)
        if sample == "loraflow_predictions_total" and labels.get("version") == version:
            count = _delta(before, after, sample, version=version, label=labels["label"])
            if count:
                classes[labels["label"]] = count
    return VersionFigures(
        version=version,
        requests=_delta(before, after, "loraflow_requests_total", version=version),
        errors=_delta(before, after, "loraflow_errors_total", version=version),
        p95_ms=None if p95 is None else p95 * 1000,
        classes=classes,
        feedback=_delta(before, after, "loraflow_feedback_total", version=version),
        correct=_delta(before, after, "loraflow_feedback_total", version=version, correct="true"),
        references=_delta(before, after, "loraflow_feedback_rouge_l_count", version=version),
        rouge_l=_delta(before, after, "loraflow_feedback_rouge_l_sum", version=version),
    )


def champion_baseline(history: list[StepAnalysis], spec: CanaryAnalysis) -> VersionFigures | None:
    """The champion's figures over earlier steps, for a step where it served too little (at
    100 % it serves nothing): latest p95 with enough requests, pooled feedback."""
    enough = [s.champion for s in history if s.champion.requests >= spec.min_requests]
    if not enough:
        return None
    return VersionFigures(
        version=enough[-1].version,
        requests=sum(f.requests for f in enough),
        errors=sum(f.errors for f in enough),
        p95_ms=enough[-1].p95_ms,
        feedback=sum(s.champion.feedback for s in history),
        correct=sum(s.champion.correct for s in history),
    )


def _checks(
    percent: float,
    challenger: VersionFigures,
    champion: VersionFigures,
    compared: float,
    agreed: float,
    spec: CanaryAnalysis,
    baseline: VersionFigures | None,
) -> list[CanaryCheck]:
    n = spec.min_requests
    checks = [
        CanaryCheck("challenger_requests", challenger.requests >= n, challenger.requests, f">= {n}")
    ]
    if percent < 100:
        checks.append(
            CanaryCheck("champion_requests", champion.requests >= n, champion.requests, f">= {n}")
        )
    rate = challenger.error_rate
    checks.append(
        CanaryCheck(
            "error_rate",
            None if rate is None else rate <= spec.max_error_rate,
            rate,
            f"<= {spec.max_error_rate:g}",
            f"{challenger.errors:g} of {challenger.requests:g} requests",
        )
    )
    reference = champion if champion.requests >= n else baseline
    mine, theirs = challenger.p95_ms, reference.p95_ms if reference else None
    if mine is None or theirs is None or theirs <= 0:
        checks.append(
            CanaryCheck("p95_latency_ratio", None, None, "", "no champion latency to compare")
        )
    else:
        ratio = mine / theirs
        ok = ratio <= spec.max_p95_latency_ratio or mine - theirs < spec.p95_latency_tolerance_ms
        checks.append(
            CanaryCheck(
                "p95_latency_ratio",
                ok,
                ratio,
                f"<= {spec.max_p95_latency_ratio:g} (or < {spec.p95_latency_tolerance_ms:g} ms "
                "apart)",
                f"challenger p95 {mine:.1f} ms vs champion {theirs:.1f} ms",
            )
        )
    if spec.max_p95_latency_ms is not None:
        checks.append(
            CanaryCheck(
                "p95_latency_ms",
                None if mine is None else mine <= spec.max_p95_latency_ms,
                mine,
                f"<= {spec.max_p95_latency_ms:g}",
            )
        )
    # Judged over at least min_requests texts, as online accuracy over min_feedback: a CI run
    # rolled back a good challenger on "1 of 2 texts labelled as the champion did".
    agreement = agreed / compared if compared else None
    rouge = spec.agreement_metric == "rouge_l"
    judged = agreement is not None and compared >= n
    checks.append(
        CanaryCheck(
            "agreement_rouge_l" if rouge else "agreement",
            agreement >= spec.min_agreement if judged else None,
            agreement,
            f">= {spec.min_agreement:g}",
            (
                f"mean ROUGE-L of {compared:g} answers vs the champion's on the same prompts"
                if rouge
                else f"{agreed:g} of {compared:g} texts labelled as the champion did"
            )
            + ("" if judged or not compared else f" (fewer than {n}: not judged)"),
        )
    )
    reference = champion if champion.feedback >= spec.min_feedback else baseline
    theirs_acc = reference.online_accuracy if reference else None
    if (
        challenger.feedback < spec.min_feedback
        or theirs_acc is None
        or reference.feedback < spec.min_feedback
    ):
        checks.append(
            CanaryCheck(
                "online_accuracy",
                None,
                challenger.online_accuracy,
                "",
                f"fewer than {spec.min_feedback} labelled outcomes per model",
            )
        )
    else:
        floor = theirs_acc - spec.max_accuracy_drop
        checks.append(
            CanaryCheck(
                "online_accuracy",
                challenger.online_accuracy >= floor,
                challenger.online_accuracy,
                f">= {floor:.4g} (champion {theirs_acc:.4g} - {spec.max_accuracy_drop:g})",
                f"{challenger.correct:g} of {challenger.feedback:g} labelled outcomes right",
            )
        )
    return checks


def analyse(
    step: int,
    steps: tuple[float, ...],
    before: Snapshot,
    after: Snapshot,
    champion: str,
    challenger: str,
    spec: CanaryAnalysis,
    history: list[StepAnalysis],
) -> StepAnalysis:
    """Judge step ``step`` (1-based) of ``steps`` from the scrapes around it."""
    percent = steps[step - 1]
    mine = version_figures(before, after, challenger)
    theirs = version_figures(before, after, champion)
    compared = shadow_compared(before, after, challenger, champion)
    if spec.agreement_metric == "rouge_l":  # agreed: the sum of the pairs' ROUGE-L F1
        agreed = _delta(
            before, after, "loraflow_shadow_rouge_l_total", version=challenger, champion=champion
        )
    else:
        agreed = _delta(
            before,
            after,
            "loraflow_shadow_agreement_total",
            version=challenger,
            champion=champion,
            agree="true",
        )
    checks = _checks(
        percent, mine, theirs, compared, agreed, spec, champion_baseline(history, spec)
    )
    if any(c.passed is False for c in checks):
        outcome: Outcome = "rollback"
    else:
        outcome = "promote" if step == len(steps) else "continue"
    return StepAnalysis(step, percent, mine, theirs, compared, agreed, tuple(checks), outcome)


def to_markdown(name: str, analysis: StepAnalysis) -> str:
    a = analysis
    head = {"continue": "continue", "promote": "PROMOTE", "rollback": "ROLL BACK"}[a.outcome]
    rows = [
        f"## Canary {name} v{a.challenger.version} vs v{a.champion.version}, "
        f"step {a.step} at {a.percent:g} %: **{head}**",
        "",
        "| check | figure | threshold | verdict | detail |",
        "|---|---|---|---|---|",
    ]
    for c in a.checks:
        figure = "n/a" if c.figure is None else f"{c.figure:.4g}"
        rows.append(f"| {c.name} | {figure} | {c.threshold} | {c.verdict} | {c.detail} |")
    rows += ["", "| version | requests | errors | p95 ms | online accuracy | classes |"]
    rows.append("|---|---|---|---|---|---|")
    for role, f in (("challenger", a.challenger), ("champion", a.champion)):
        p95 = "n/a" if f.p95_ms is None else f"{f.p95_ms:.1f}"
        acc = "n/a" if f.online_accuracy is None else f"{f.online_accuracy:.3f}"
        classes = ", ".join(f"{k}: {v:g}" for k, v in sorted(f.classes.items()))
        rows.append(
            f"| v{f.version} ({role}) | {f.requests:g} | {f.errors:g} | {p95} | {acc} | {classes} |"
        )
    return "\n".join(rows) + "\n"
