"""Score generators (candidate, champion, base) on one eval split: the causal-LM evaluation.

Each model answers the same held-out prompts with the same pinned decoding settings; the
answers are compared with the references (exact match, ROUGE-L: the project's ``evaluate``
modules), judged for format (JSON / JSON Schema / regex), refusals and empty answers; the
references' perplexity under the model is measured as in training. Golden prompts (expected
answer or required substrings) and slices by prompt length come on top, and the candidate's
worst answers (lowest ROUGE-L) make a table for people to read.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from tasks.core.config.evaluation import EvalSpec, GateSpec
from tasks.core.config.generation import FormatSpec
from tasks.core.data.chat import parse_prompt
from tasks.core.data.prepare import load_prepared
from tasks.core.errors import ConfigError
from tasks.core.evaluation import metrics as metric_modules
from tasks.core.evaluation.causal import response_nll
from tasks.core.evaluation.report import EvalReport, GoldenCase, ModelScores, SliceFigure
from tasks.core.training.generation import Generator, timed


def format_ok(text: str, spec: FormatSpec) -> bool:
    """Whether ``text`` has the configured format (always, with kind none)."""
    if spec.kind == "regex":
        return re.fullmatch(spec.pattern, text.strip(), flags=re.DOTALL) is not None
    if spec.kind in ("json", "json_schema"):
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            return False
        if spec.kind == "json":
            return True
        import jsonschema

        return jsonschema.Draft202012Validator(spec.json_schema).is_valid(value)
    return True


def is_refusal(text: str, phrases: tuple[str, ...]) -> bool:
    lowered = text.strip().lower()
    return any(lowered.startswith(p.lower()) for p in phrases)


def per_example_rouge(outputs: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F1 of each answer, by the metric module's own function (one ``compute`` per
    example would cost an Arrow table each: minutes on a full eval split)."""
    from tasks.core.evaluation.metrics.rouge_l import _f1

    return [float(_f1(o, r)) for o, r in zip(outputs, references, strict=True)]


def text_figures(outputs: list[str], references: list[str], spec: EvalSpec) -> dict[str, float]:
    """exact_match, rouge_l, format_valid, refusal_rate, empty_rate of answers vs references."""
    n = max(len(outputs), 1)
    figures = {
        "exact_match": metric_modules.load("exact_match").compute(
            predictions=outputs, references=references
        )["exact_match"],
        "rouge_l": metric_modules.load("rouge_l").compute(
            predictions=outputs, references=references
        )["rougeL"],
        "refusal_rate": sum(is_refusal(o, spec.refusal_phrases) for o in outputs) / n,
        "empty_rate": sum(not o.strip() for o in outputs) / n,
    }
    if spec.format.kind != "none":
        figures["format_valid"] = sum(format_ok(o, spec.format) for o in outputs) / n
    return {k: float(v) for k, v in figures.items()}


def perplexity(generator: Generator, prompts: list, references: list[str], max_length: int):
    """(mean response-token loss, perplexity) of the references given their prompts."""
    total, tokens = 0.0, 0
    for prompt, reference in zip(prompts, references, strict=True):
        nll, count = response_nll(
            generator.model, generator.tokenizer, prompt, reference, max_length
        )
        total, tokens = total + nll, tokens + count
    loss = total / tokens if tokens else float("nan")
    return loss, (math.exp(loss) if tokens else float("nan"))


def score_generator(generator, prompts, references, spec: EvalSpec, max_length: int):
    """(figures, answer texts) of one model on the prompts."""
    answers, seconds = timed(generator, prompts, spec.generation, spec.batch_size)
    outputs = [a.text for a in answers]
    figures = text_figures(outputs, references, spec)
    figures["loss"], figures["perplexity"] = perplexity(generator, prompts, references, max_length)
    figures["examples"] = float(len(prompts))
    figures["latency_ms_per_example"] = 1000 * seconds / max(len(prompts), 1)
    figures["output_tokens_mean"] = float(np.mean([a.output_tokens for a in answers] or [0]))
    return figures, outputs


def read_golden_prompts(path: Path) -> list[tuple[int, str, str | None, tuple[str, ...]]]:
    """(line, prompt, expected answer or None, required substrings) per JSONL line."""
    cases = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            prompt = row["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f'{path}: line {number}: expected {{"prompt": ..., "expected": ...}} or '
                f'{{"prompt": ..., "contains": [...]}} ({exc})'
            ) from None
        expected, contains = row.get("expected"), row.get("contains") or []
        if not isinstance(prompt, str) or not prompt.strip() or (expected is None and not contains):
            raise ConfigError(
                f"{path}: line {number}: needs a non-empty prompt and 'expected' or 'contains'"
            )
        cases.append((number, prompt, expected, tuple(str(c) for c in contains)))
    if not cases:
        raise ConfigError(f"{path}: no golden cases")
    return cases


def golden_answers(cases, candidate, champion, spec: EvalSpec, served=None):
    prompts = [(served or (lambda p: p))(prompt) for _, prompt, _, _ in cases]
    new = [a.text for a in candidate.generate(prompts, spec.generation, spec.batch_size)]
    old = (
        [a.text for a in champion.generate(prompts, spec.generation, spec.batch_size)]
        if (champion)
        else [None] * len(cases)
    )
    result = []
    for (line, prompt, expected, contains), answer, before in zip(cases, new, old, strict=True):
        ok = (expected is None or answer.strip() == str(expected).strip()) and all(
            c in answer for c in contains
        )
        wanted = str(expected) if expected is not None else "contains " + ", ".join(contains)
        result.append(GoldenCase(line, prompt, wanted, answer, float(ok), before, ok=ok))
    return tuple(result)


def _bucket(words: int, edges: tuple[int, ...]) -> str:
    lower = 0
    for edge in edges:
        if words < edge:
            return f"<{edge}" if lower == 0 else f"{lower}-{edge - 1}"
        lower = edge
    return f">={lower}"


def slice_figures(gates: GateSpec, columns: dict, outputs, references, spec: EvalSpec):
    figures = []
    for rule in gates.slices:
        if rule.length_buckets:
            keys = [_bucket(len(p.split()), rule.length_buckets) for p in columns["prompt"]]
        elif rule.column in columns:
            keys = [str(v) for v in columns[rule.column]]
        else:
            raise ConfigError(
                f"gates.slices[{rule.name}].column: {rule.column!r} is not a column of the "
                f"prepared eval split; columns: {', '.join(columns)}"
            )
        for bucket in sorted(set(keys), key=lambda k: (len(k), k)):
            idx = [i for i, k in enumerate(keys) if k == bucket]
            sub = text_figures([outputs[i] for i in idx], [references[i] for i in idx], spec)
            value = sub.get(rule.metric, float("nan"))
            figures.append(SliceFigure(rule.name, bucket, rule.metric, len(idx), value))
    return tuple(figures)


def worst_examples(columns, outputs, references, count: int) -> tuple[dict, ...]:
    scores = per_example_rouge(outputs, references)
    order = sorted(range(len(outputs)), key=lambda i: (scores[i], i))[:count]
    return tuple(
        {"prompt": columns["prompt"][i], "reference": references[i], "output": outputs[i],
         "rouge_l": round(scores[i], 4)}
        for i in order
    )  # fmt: skip


def evaluate_generators(
    candidate: Generator,
    prepared_path: str,
    spec: EvalSpec,
    gates: GateSpec,
    max_length: int,
    champion: Generator | None = None,
    champion_version: str | None = None,
    base: Generator | None = None,
    served=None,
) -> EvalReport:
    """Score every given generator on the prepared eval split; the candidate in full detail.

    ``served`` turns a golden prompt into the turns a served prompt becomes (system prompt,
    preprocessing); the eval split's prompts are prepared that way already.
    """
    data = load_prepared(prepared_path)["eval"]
    if spec.max_examples and spec.max_examples < len(data):
        data = data.shuffle(seed=0).select(range(spec.max_examples))
    columns = {name: list(data[name]) for name in data.column_names}
    prompts = [parse_prompt(m) for m in columns["messages"]]
    references = columns["response"]
    figures, outputs = score_generator(candidate, prompts, references, spec, max_length)
    others = {}
    for role, model in (("champion", champion), ("base", base)):
        if model is not None:
            found = score_generator(model, prompts, references, spec, max_length)[0]
            others[role] = ModelScores(role, model.source, found)
    golden = ()
    if gates.golden.path is not None:
        cases = read_golden_prompts(gates.golden.path)
        golden = golden_answers(cases, candidate, champion, spec, served)
    return EvalReport(
        labels=(),
        candidate=ModelScores("candidate", candidate.source, figures),
        champion=others.get("champion"),
        champion_version=champion_version,
        champion_note="" if champion_version else "no champion yet",
        base=others.get("base"),
        slices=slice_figures(gates, columns, outputs, references, spec),
        golden=golden,
        examples=worst_examples(columns, outputs, references, spec.worst_examples),
    )
