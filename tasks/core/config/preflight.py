"""Refuse before training what would only fail after it: settings that validate one by one
but not together, checked against the data, the golden file and the base model's layers.

The schema checks each key alone; these checks need two of them at once (a gate's class
against ``data.labels``, a batch size against the data's row count) or a file the config
names (golden cases, the model's weights index in the mirror). ``loraflow validate``,
``loraflow run`` (before Prefect starts) and the flow (before the fine-tune stage) all call
them, so a typo costs seconds, not a training run. Every problem is one clause naming the
file, the key and what is allowed; all of them are raised at once as a ``ConfigError``.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.catalog.base import module_names
from tasks.core.catalog.mirror import resolve_revision, snapshot_path
from tasks.core.config.evaluation import GENERATION_CEILINGS, GENERATION_SCORES, PER_CLASS_METRIC
from tasks.core.config.loader import LoadedConfig
from tasks.core.config.train import LoraSpec
from tasks.core.errors import ConfigError, LoraflowError, MirrorError

PREPARED_COLUMNS = ("label", "text")  # what a slice can name in the prepared eval split
GENERATIVE_COLUMNS = ("prompt", "response")
NEEDS = {"accuracy": "accuracy", "macro_f1": "macro_f1", "ece": "ece"}  # gate -> eval metric


def preflight(loaded: LoadedConfig, cache_dir: Path | None = None) -> None:
    """Raise ConfigError listing every problem (nothing is trained or written)."""
    cfg = loaded.config
    problems = [*gate_problems(loaded), *golden_problems(loaded), *slice_problems(loaded)]
    problems += batch_problems(loaded)
    if cache_dir is not None and cfg.discovery.repo_id and cfg.lora.target_modules:
        try:
            revision = resolve_revision(cache_dir, cfg.discovery.repo_id, cfg.discovery.revision)
        except MirrorError:
            revision = None  # not mirrored (yet): checked again once the model is resolved
        if revision is not None:
            snapshot = snapshot_path(cache_dir, cfg.discovery.repo_id, revision)
            where = loaded.defined_in("lora", "target_modules")
            problems += target_module_problems(cfg.lora, snapshot, cfg.discovery.repo_id, where)
    if problems:
        raise ConfigError("; ".join(problems))


def _classes(kind: str, labels) -> str:
    return ", ".join(f"{kind}_{label}" for label in labels)


def gate_problems(loaded: LoadedConfig) -> list[str]:
    """Per-class gates name classes of ``data.labels``; every gated figure is computed."""
    cfg = loaded.config
    if cfg.train.task != "sequence-classification":
        return generative_gate_problems(loaded)
    computed, labels, problems = set(cfg.eval.metrics), cfg.data.labels, []
    for metric in cfg.gates.absolute:
        where = f"{loaded.defined_in('gates', 'absolute', metric)}: gates.absolute.{metric}"
        per_class = PER_CLASS_METRIC.match(metric)
        if per_class and per_class.group(2) not in labels:
            kind = per_class.group(1)
            problems.append(
                f"{where}: {per_class.group(2)!r} is not a class of data.labels; allowed: "
                f"{_classes(kind, labels)}"
            )
        elif per_class and "per_class" not in computed:
            problems.append(f"{where}: needs 'per_class' in eval.metrics (it computes it)")
        elif metric in GENERATION_SCORES:
            problems.append(f"{where}: a causal-lm metric; this is a classification run")
        elif metric in NEEDS and NEEDS[metric] not in computed:
            problems.append(f"{where}: needs {NEEDS[metric]!r} in eval.metrics")
    for metric in cfg.gates.maximum:
        where = f"{loaded.defined_in('gates', 'maximum', metric)}: gates.maximum.{metric}"
        if metric in GENERATION_CEILINGS:
            problems.append(
                f"{where}: a causal-lm metric; allowed here: ece, latency_ms_per_example"
            )
        elif metric in NEEDS and NEEDS[metric] not in computed:
            problems.append(f"{where}: needs {NEEDS[metric]!r} in eval.metrics")
    rules = (
        ("non_inferiority", cfg.gates.non_inferiority.metrics),
        ("base_model", cfg.gates.base_model.metrics if cfg.gates.base_model.min_gain else ()),
    )
    for section, metrics in rules:
        for metric in (m for m in metrics if m not in computed):
            where = loaded.defined_in("gates", section, "metrics")
            problems.append(f"{where}: gates.{section}.metrics: {metric!r} is not in eval.metrics")
    return problems


def generative_gate_problems(loaded: LoadedConfig) -> list[str]:
    """causal-lm gates name generation figures; format_valid needs eval.format."""
    cfg, problems = loaded.config, []
    scores = [g for g in GENERATION_SCORES if g != "format_valid" or cfg.eval.format.kind != "none"]
    allowed = {"absolute": scores, "maximum": [*GENERATION_CEILINGS, "latency_ms_per_example"]}
    named = {
        "absolute": list(cfg.gates.absolute),
        "maximum": list(cfg.gates.maximum),
        "non_inferiority": list(cfg.gates.non_inferiority.metrics),
        "base_model": list(cfg.gates.base_model.metrics) if cfg.gates.base_model.min_gain else [],
    }
    for section, metrics in named.items():
        for metric in metrics:
            if metric in allowed.get(section, scores):
                continue
            where = loaded.defined_in("gates", section)
            hint = " (set eval.format)" if metric == "format_valid" else ""
            problems.append(
                f"{where}: gates.{section}: {metric!r} is not a causal-lm figure{hint}; "
                f"allowed: {', '.join(allowed.get(section, scores))}"
            )
    for rule in cfg.gates.slices:
        if rule.metric not in scores:
            problems.append(
                f"{loaded.defined_in('gates', 'slices')}: gates.slices[{rule.name}].metric: "
                f"{rule.metric!r}; allowed for causal-lm: {', '.join(scores)}"
            )
    return problems


def golden_problems(loaded: LoadedConfig) -> list[str]:
    """The golden file parses and every case names a class (the evaluation's own reader)."""
    from tasks.core.evaluation.golden import read_golden

    path = loaded.config.gates.golden.path
    if path is None:
        return []
    try:
        if loaded.config.train.task != "sequence-classification":
            from tasks.core.evaluation.generation import read_golden_prompts

            read_golden_prompts(path)
        else:
            read_golden(path, list(loaded.config.data.labels))
    except ConfigError as exc:
        return [f"gates.golden.path: {exc}"]
    return []


def slice_problems(loaded: LoadedConfig) -> list[str]:
    problems = []
    generative = loaded.config.data.kind == "generative"
    columns = GENERATIVE_COLUMNS if generative else PREPARED_COLUMNS
    for i, rule in enumerate(loaded.config.gates.slices):
        if rule.column is not None and rule.column not in columns:
            where = loaded.defined_in("gates", "slices", i)
            problems.append(
                f"{where}: gates.slices[{rule.name}].column: {rule.column!r} is not a column of "
                f"the prepared eval split; allowed: {', '.join(columns)} (or "
                "length_buckets)"
            )
    return problems


def target_module_problems(
    lora: LoraSpec, snapshot: Path, repo_id: str, where: Path | str = ""
) -> list[str]:
    """``lora.target_modules`` against the layer names in the model's safetensors headers."""
    if not lora.target_modules:
        return []
    names = module_names(snapshot)
    if not names:  # no safetensors to read: PEFT checks when it loads the model
        return []
    last = {name.rsplit(".", 1)[-1] for name in names}
    missing = [t for t in lora.target_modules if not any(_matches(n, t) for n in names)]
    if not missing:
        return []
    prefix = f"{where}: " if where else ""
    return [
        f"{prefix}lora.target_modules: {missing} match no layer of {repo_id}; allowed: "
        f"{', '.join(sorted(last))}"
    ]


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a list of names: the module's full name, or its dotted suffix."""
    return name == target or name.endswith(f".{target}")


def batch_problems(loaded: LoadedConfig) -> list[str]:
    """``train.batch_size`` no larger than the training rows (an upper bound before checks)."""
    from tasks.core.data.loading import load_split

    cfg = loaded.config
    data = cfg.data
    try:
        rows = load_split(data.train).num_rows
    except LoraflowError as exc:
        return [str(exc)]
    if data.split is not None:
        rows = int(rows * (1 - data.split.eval_fraction))
    if data.train.max_samples:
        rows = min(rows, data.train.max_samples)
    if cfg.train.batch_size <= rows:
        return []
    where = loaded.defined_in("train", "batch_size")
    return [
        f"{where}: train.batch_size: {cfg.train.batch_size:,} is more than the {rows:,} "
        f"training rows of {data.train.source}; allowed: 1..{rows:,}"
    ]


def check_model(lora: LoraSpec, candidate, cache_dir: Path) -> None:
    """The audited model's layers against ``lora.target_modules`` (the flow, before training;
    a model found by discovery is known only then)."""
    if not lora.target_modules or getattr(candidate, "source", "mirror") != "mirror":
        return
    snapshot = snapshot_path(cache_dir, candidate.repo_id, candidate.revision)
    problems = target_module_problems(lora, snapshot, candidate.repo_id)
    if problems:
        raise ConfigError("; ".join(problems))
