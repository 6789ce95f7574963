"""The model card (README.md) of a registered version, generated from what the run recorded.

Written from the same records the audit trail keeps (tags, the evaluation report, the gate
decision, the license audit and the data validation), so the card cannot claim what the run
did not measure. It is logged with the model and set as the version's description.
"""

from __future__ import annotations

import yaml

from tasks.core.config.experiment import RegistrySpec
from tasks.core.evaluation.gates import GateDecision
from tasks.core.evaluation.report import EvalReport

FIGURES = ("accuracy", "macro_f1", "ece", "latency_ms_per_example")
GENERATIVE_FIGURES = ("exact_match", "rouge_l", "format_valid", "empty_rate", "perplexity")


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _front_matter(tags: dict[str, str], audit: dict, data_name: str) -> str:
    model_license = next(
        (
            s.get("license")
            for s in audit.get("subjects", ())
            if str(s.get("subject", "")).startswith("model:")
        ),
        None,
    )
    meta = {
        "license": model_license or "unknown",
        "base_model": tags.get("base_repo_id", ""),
        "library_name": "peft",
        "pipeline_tag": "text-classification",
        "datasets": [data_name] if data_name else [],
        "tags": ["loraflow", "lora"],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def without_front_matter(card: str) -> str:
    """The card without its YAML header: what a version's description shows. MLflow renders
    the description as Markdown, where the Hub's metadata block reads as garbage."""
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            return card[end + 5 :].lstrip("\n")
    return card


def _preprocessing(validation: dict) -> list[str]:
    """What the served model does to every input before scoring it (as in training)."""
    from tasks.core.data.preprocess import Preprocessing

    recorded = validation.get("preprocessing")
    if not recorded:
        return ["Not recorded (trained before loraflow recorded it): texts are scored as sent."]
    steps = Preprocessing.from_dict(recorded).describe()
    return [
        f"Every input is rewritten exactly as the training and evaluation texts were: {steps}. "
        "The registered model applies this itself (MLflow pyfunc and `loraflow serve`)."
    ]


def _metrics(report: EvalReport) -> list[str]:
    keys = GENERATIVE_FIGURES if not report.labels else FIGURES
    rows = ["| model | source | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for m in (report.candidate, report.champion, report.base):
        if m is not None:
            figures = " | ".join(_f(m.metrics.get(k)) for k in keys)
            repo, at, revision = m.source.partition("@")
            source = f"{repo}@{revision[:12]}" if at else m.source
            rows.append(f"| {m.role} | `{source}` | {figures} |")
    per_class = [
        f"{label}: precision {_f(report.candidate.metrics.get(f'precision_{label}'))}, "
        f"recall {_f(report.candidate.metrics.get(f'recall_{label}'))}, "
        f"F1 {_f(report.candidate.metrics.get(f'f1_{label}'))}"
        for label in report.labels
        if f"precision_{label}" in report.candidate.metrics
    ]
    if per_class:
        rows += ["", "Per class (candidate): " + "; ".join(per_class) + "."]
    return rows


def _gates(decision: GateDecision) -> list[str]:
    rows = [
        f"Decision: **{decision.label}**"
        + (f" (gate policy {decision.policy_version})" if decision.policy_version else ""),
        "",
        "| gate | figure | threshold | result |",
        "|---|---|---|---|",
    ]
    for g in decision.gates:
        threshold = "" if g.threshold is None else f"{g.op} {g.threshold}"
        rows.append(f"| {g.gate} | {_f(g.figure)} | {threshold} | {g.status} |")
    return rows


def _license(audit: dict) -> list[str]:
    rows = [
        f"Audit verdict **{audit.get('verdict', 'unknown')}** under license policy "
        f"{audit.get('policy_version', '?')} (intended use: {audit.get('intended_use', '?')})."
    ]
    for s in audit.get("subjects", ()):
        approval = s.get("approval")
        signed = f", approved by {approval.get('approved_by')}" if approval else ""
        rows.append(
            f"- {s.get('subject')}: {s.get('license')} - {s.get('decision')}{signed} "
            f"({s.get('reason')})"
        )
    return rows


def _limits(
    registry: RegistrySpec, report: EvalReport, data_name: str, eval_rows: int | None
) -> list[str]:
    rows = [f"- {line}" for line in registry.limitations]
    rows.append(
        f"- Measured only on the {data_name or 'configured'} eval split"
        f" ({eval_rows if eval_rows is not None else '?'} examples); other data may differ."
    )
    gated = [s for s in report.slices if s.examples > 0]
    if gated:
        weakest = min(gated, key=lambda s: s.figure)
        rows.append(
            f"- Weakest slice: {weakest.key} {weakest.metric} {weakest.figure:.4f} "
            f"on {weakest.examples} examples."
        )
    if "ece" in report.candidate.metrics:
        rows.append(
            f"- Scores are probabilities with expected calibration error "
            f"{report.candidate.metrics['ece']:.4f}."
        )
    rows.append("- Inherits the limits and biases of the base model; see its own card.")
    return rows


def render(
    name: str,
    tags: dict[str, str],
    report: EvalReport,
    decision: GateDecision,
    registry: RegistrySpec,
    audit: dict,
    validation: dict,
    config: dict,
) -> str:
    """README.md for a version of ``name``; inputs are the run's records, as plain data."""
    data = config.get("data", {}) if isinstance(config, dict) else {}
    data_name = str(data.get("name", ""))
    rows = validation.get("rows", {})
    intended = registry.intended_use or config.get("description") or "(not stated in the config)"
    base = f"{tags.get('base_repo_id')}@{tags.get('base_revision')}"
    lines = [
        _front_matter(tags, audit, data_name),
        f"# {name}",
        "",
        f"A LoRA adapter (PEFT) on `{base}` for "
        + (
            f"text classification into {', '.join(report.labels)}"
            if report.labels
            else "instruction following (text generation)"
        )
        + ", fine-tuned and gated by loraflow "
        f"(MLflow run `{tags.get('train_run_id', '')}`).",
        "",
        "## Intended use",
        "",
        intended,
        "",
        "## Data",
        "",
        f"{data_name or 'dataset'} (license {data.get('license') or 'not declared'}), "
        f"sha256 `{tags.get('dataset_sha256', '')}`: {rows.get('train', '?')} training and "
        f"{rows.get('eval', '?')} evaluation examples; validation "
        f"**{validation.get('verdict', tags.get('validation_verdict', '?'))}**.",
        "",
        "## Input preprocessing",
        "",
        *_preprocessing(validation),
        "",
        "## Metrics",
        "",
        f"All on the same eval split in the same run; champion: "
        f"{'v' + report.champion_version if report.champion else report.champion_note}.",
        "",
        *_metrics(report),
        "",
        "## Gates",
        "",
        *_gates(decision),
        "",
        "## License",
        "",
        *_license(audit),
        "",
        "## Limits",
        "",
        *_limits(registry, report, data_name, rows.get("eval")),
        "",
        "## Lineage",
        "",
        *_lineage(tags, base),
        "",
    ]
    return "\n".join(lines)


def _lineage(tags: dict[str, str], base: str) -> list[str]:
    return [
        f"- base `{base}`, tokenizer revision `{tags.get('tokenizer_revision', '')}`",
        f"- config sha256 `{tags.get('config_sha256', '')}` "
        f"(resolved: `runs:/{tags.get('train_run_id', '')}/config/resolved.yaml`)",
        f"- code commit `{tags.get('git_commit', '')}`, Prefect flow run "
        f"`{tags.get('prefect.flow_run_id', '')}`",
    ]
