"""The registration gate: a pure decision over evaluation figures and configured thresholds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tasks.core.config import GateSpec


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    figure: float | None
    threshold: float
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    gates: tuple[GateResult, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return "pass" if self.passed else "fail"

    def failures(self) -> list[str]:
        return [
            f"{g.metric} = {g.figure if g.figure is None else round(g.figure, 4)} < {g.threshold}"
            for g in self.gates
            if not g.passed
        ]

    def to_dict(self) -> dict:
        return asdict(self) | {"decision": self.label}


def decide(metrics: dict[str, float], spec: GateSpec) -> GateDecision:
    """Every absolute gate must hold; a metric the evaluation did not produce fails its gate."""
    results = []
    for metric, threshold in sorted(spec.absolute.items()):
        figure = metrics.get(metric)
        passed = figure is not None and figure >= threshold
        results.append(GateResult(f"min_{metric}", metric, figure, threshold, passed))
    return GateDecision(all(r.passed for r in results), tuple(results))


def to_markdown(decision: GateDecision) -> str:
    lines = [
        f"## Gate decision: **{decision.label.upper()}**",
        "",
        "| gate | figure | threshold | result |",
        "|---|---|---|---|",
    ]
    for g in decision.gates:
        figure = "(missing)" if g.figure is None else f"{g.figure:.4f}"
        lines.append(
            f"| {g.gate} | {figure} | >= {g.threshold} | {'pass' if g.passed else 'FAIL'} |"
        )
    if not decision.gates:
        lines.append("| (no gates configured) | | | pass |")
    return "\n".join(lines)
