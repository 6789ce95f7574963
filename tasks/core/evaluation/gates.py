"""The registration gate: a pure decision over an evaluation report and the configured gates.

Every configured gate yields one row (figure, threshold, pass / fail / skip), in a fixed
order: minimums, maximums, non-inferiority to the champion, gain over the base model, golden
examples, slices. A candidate is registered only when no row fails. The registry and MLflow
I/O that record the decision live in ``tasks/gate.py``, so the decision is unit-tested
without a registry (ZenML's e2e example compares and promotes inside one step; here they are
kept apart on purpose).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from tasks.core.config.evaluation import GateSpec
from tasks.core.evaluation.report import EvalReport

Status = Literal["pass", "fail", "skip"]
CLASSIFIER_KEYS = ("accuracy", "macro_f1", "ece", "latency_ms_per_example")
GENERATIVE_KEYS = (
    "exact_match", "rouge_l", "format_valid", "refusal_rate", "empty_rate", "perplexity",
    "latency_ms_per_example",
)  # fmt: skip


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    figure: float | None
    threshold: float | None
    status: Status
    op: Literal[">=", "<="] = ">="
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def failure(self) -> str:
        figure = "None" if self.figure is None else f"{round(self.figure, 4)}"
        negated = "<" if self.op == ">=" else ">"
        line = f"{self.gate}: {self.metric} = {figure} {negated} {self.threshold}"
        return f"{line} ({self.detail})" if self.detail else line


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    gates: tuple[GateResult, ...] = field(default_factory=tuple)
    policy_version: str = ""

    @property
    def label(self) -> str:
        return "pass" if self.passed else "fail"

    def failures(self) -> list[str]:
        return [g.failure() for g in self.gates if g.status == "fail"]

    def to_dict(self) -> dict:
        data = asdict(self) | {"decision": self.label}
        for row, gate in zip(data["gates"], self.gates, strict=True):
            row["passed"] = gate.passed
        return data


def _holds(figure: float | None, threshold: float, op: str) -> bool:
    if figure is None or math.isnan(figure):
        return False  # a figure the evaluation did not produce fails its gate
    return figure >= threshold if op == ">=" else figure <= threshold


def _gate(gate: str, metric: str, figure, threshold, op=">=", detail="") -> GateResult:
    status: Status = "pass" if _holds(figure, threshold, op) else "fail"
    return GateResult(gate, metric, figure, threshold, status, op, detail)


def _absolute(report: EvalReport, spec: GateSpec) -> list[GateResult]:
    metrics = report.candidate.metrics
    rows = [_gate(f"min_{m}", m, metrics.get(m), t) for m, t in sorted(spec.absolute.items())]
    rows += [_gate(f"max_{m}", m, metrics.get(m), t, "<=") for m, t in sorted(spec.maximum.items())]
    return rows


def _non_inferiority(report: EvalReport, spec: GateSpec) -> list[GateResult]:
    rule = spec.non_inferiority
    rows = []
    for metric in rule.metrics:
        figure = report.candidate.metrics.get(metric)
        gate = f"non_inferiority_{metric}"
        if report.champion is None:
            note = report.champion_note or "no champion yet"
            status: Status = "fail" if report.champion_version else "skip"
            rows.append(GateResult(gate, metric, figure, None, status, detail=note))
            continue
        old = report.champion.metrics.get(metric)
        threshold = None if old is None else round(old - rule.margin, 6)
        shown = "None" if old is None else f"{old:.4f}"
        detail = f"champion v{report.champion_version} {shown} - margin {rule.margin}"
        rows.append(
            _gate(gate, metric, figure, threshold, detail=detail)
            if threshold is not None
            else GateResult(gate, metric, figure, None, "fail", detail=detail)
        )
    return rows


def _base_gain(report: EvalReport, spec: GateSpec) -> list[GateResult]:
    rule = spec.base_model
    if rule.min_gain is None:
        return []
    rows = []
    for metric in rule.metrics:
        base = report.base.metrics.get(metric) if report.base else None
        figure = report.candidate.metrics.get(metric)
        gate = f"base_gain_{metric}"
        if base is None:
            rows.append(GateResult(gate, metric, figure, None, "fail", detail="base not scored"))
            continue
        detail = f"base {base:.4f} + min_gain {rule.min_gain}"
        rows.append(_gate(gate, metric, figure, round(base + rule.min_gain, 6), detail=detail))
    return rows


def _golden(report: EvalReport, spec: GateSpec) -> list[GateResult]:
    if spec.golden.path is None:
        return []
    cases = report.golden
    failed = [c for c in cases if not c.passed]
    rate = (len(cases) - len(failed)) / len(cases) if cases else None
    detail = f"{len(failed)} of {len(cases)} wrong"
    if failed:
        detail += " (lines " + ", ".join(str(c.line) for c in failed[:10]) + ")"
    detail += f"; {len(report.golden_changes())} changed vs champion"
    return [_gate("golden", "pass_rate", rate, spec.golden.min_pass_rate, detail=detail)]


def _slices(report: EvalReport, spec: GateSpec) -> list[GateResult]:
    rules = {s.name: s for s in spec.slices}
    rows = []
    for fig in report.slices:
        rule = rules.get(fig.slice)
        if rule is None:
            continue
        gate = f"slice_{fig.key}"
        if fig.examples < rule.min_examples:
            detail = (
                f"{fig.bucket}: {fig.examples} examples < min_examples {rule.min_examples}, "
                "not gated"
            )
            rows.append(
                GateResult(gate, fig.metric, fig.figure, rule.minimum, "skip", ">=", detail)
            )
        else:
            detail = f"{fig.bucket}: {fig.examples} examples"
            rows.append(_gate(gate, fig.metric, fig.figure, rule.minimum, detail=detail))
    missing = [name for name in rules if not any(f.slice == name for f in report.slices)]
    rows += [
        GateResult(
            f"slice_{name}",
            rules[name].metric,
            None,
            rules[name].minimum,
            "fail",
            detail="slice not computed",
        )
        for name in missing
    ]
    return rows


def decide_gates(report: EvalReport, spec: GateSpec, policy_version: str = "") -> GateDecision:
    """Every configured gate, in a fixed order; the candidate passes when none fails."""
    results = (
        _absolute(report, spec)
        + _non_inferiority(report, spec)
        + _base_gain(report, spec)
        + _golden(report, spec)
        + _slices(report, spec)
    )
    return GateDecision(all(r.passed for r in results), tuple(results), policy_version)


def gate_lines(decision: GateDecision) -> list[str]:
    """One short line per gate: name, figure, threshold, result (run summaries, logs)."""
    lines = []
    for g in decision.gates:
        threshold = "" if g.threshold is None else f" {g.op} {g.threshold:g}"
        figure = "-" if g.figure is None else f"{g.figure:.4f}"
        lines.append(f"{g.gate} {figure}{threshold}: {g.status}")
    return lines


def _fmt(value: float | None) -> str:
    return "(missing)" if value is None else f"{value:.4f}"


def to_markdown(decision: GateDecision, report: EvalReport | None = None) -> str:
    """The decision table, then (with a report) the comparison and golden changes."""
    lines = [
        f"## Gate decision: **{decision.label.upper()}**",
        "",
        "| gate | figure | threshold | result | detail |",
        "|---|---|---|---|---|",
    ]
    for g in decision.gates:
        threshold = "" if g.threshold is None else f"{g.op} {g.threshold}"
        result = {"pass": "pass", "fail": "FAIL", "skip": "skip"}[g.status]
        lines.append(f"| {g.gate} | {_fmt(g.figure)} | {threshold} | {result} | {g.detail} |")
    if not decision.gates:
        lines.append("| (no gates configured) | | | pass | |")
    if report is not None:
        lines += comparison_markdown(report)
    return "\n".join(lines)


def _answer(label, score: float | None) -> str:
    """A golden answer: a class with its score, or a generated text (no score)."""
    return f"{label} ({score:.2f})" if score is not None else str(label).replace("|", "/")


def comparison_markdown(report: EvalReport) -> list[str]:
    models = [m for m in (report.candidate, report.champion, report.base) if m is not None]
    keys = list(GENERATIVE_KEYS if report.generative else CLASSIFIER_KEYS)
    lines = ["", "### Same eval split, same run", ""]
    lines.append("| model | source | " + " | ".join(keys) + " |")
    lines.append("|---|---|" + "---|" * len(keys))
    for m in models:
        figures = " | ".join(_fmt(m.metrics.get(k)) for k in keys)
        lines.append(f"| {m.role} | `{m.source}` | {figures} |")
    if report.champion is None:
        lines.append(f"\nNo champion comparison: {report.champion_note or 'no champion yet'}.")
    changes = report.golden_changes()
    if report.golden:
        lines += ["", f"### Golden examples: {len(changes)} changed vs champion", ""]
        if changes:
            lines += ["| line | text | expected | champion | candidate |", "|---|---|---|---|---|"]
            for c in changes:
                lines.append(
                    f"| {c.line} | {c.text.replace('|', '/')} | {c.expected} "
                    f"| {_answer(c.old_label, c.old_score)} | {_answer(c.new_label, c.new_score)} |"
                )
    return lines
