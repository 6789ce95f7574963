"""Score the candidate, the champion and the base model on one eval split, in one run.

Every model is scored on the same prepared eval split with the same tokenisation and metric
modules, so the figures the gates compare differ only by the model. The candidate also gets
slice figures, golden-example outputs (beside the champion's) and a confusion matrix.
Models are loaded by the caller and handed in as ``Classifier``s; nothing here reads MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tasks.core.config.evaluation import EvalSpec, GateSpec, SliceSpec
from tasks.core.data.prepare import load_prepared
from tasks.core.data.preprocess import Preprocessing
from tasks.core.errors import ConfigError
from tasks.core.evaluation import metrics as metric_modules
from tasks.core.evaluation.base_cache import BASE_SEED, texts_sha256
from tasks.core.evaluation.golden import read_golden
from tasks.core.evaluation.report import EvalReport, GoldenCase, ModelScores, SliceFigure
from tasks.core.training.modeling import (
    load_base,
    load_classifier,
    load_tokenizer,
    predict_proba,
    predict_with_states,
    read_base_ref,
)
from tasks.core.training.refs import ModelRef

Progress = Callable[[str, int, int], None]  # (role, texts done, texts)


@dataclass
class Classifier:
    """A loaded model, the class names it predicts and the preprocessing it was trained with
    (applied to every text first, as the registered model applies it); lives in one task.

    ``dtype`` is the autocast dtype of its batches (bf16 where chosen, None: fp32);
    ``on_progress`` hears (role, texts done, texts) after every batch. With ``keep_states``
    each prediction also keeps its pooled states and token counts in ``states`` (by the
    sha256 of the preprocessed texts): the monitor's reference profile is built from the
    evaluation's own pass instead of a second one.
    """

    model: object
    tokenizer: object
    labels: list[str]
    source: str
    preprocess: Callable[[list[str]], list[str]] | None = None
    on_progress: Progress | None = None
    role: str = "candidate"
    dtype: torch.dtype | None = None
    keep_states: bool = False
    states: dict[str, Scored] = field(default_factory=dict)
    after: Callable[[list[str], int, np.ndarray, float], None] | None = None

    def predict(self, texts: list[str], batch_size: int, max_length: int):
        """(class probabilities, seconds taken); ``after(texts, max_length, probs, seconds)``
        then hears it, with the texts as given (``run_cache.keeper`` keeps it)."""
        started, given = time.perf_counter(), texts
        if self.preprocess is not None:
            texts = self.preprocess(texts)
        progress = None
        if self.on_progress is not None:
            progress = lambda done: self.on_progress(self.role, done, len(texts))  # noqa: E731
        args = (self.model, self.tokenizer, texts, batch_size, max_length, self.dtype, progress)
        if not self.keep_states:
            probs = predict_proba(*args)
        else:
            probs, pooled, tokens = predict_with_states(*args)
            self.states[texts_sha256(texts)] = Scored(list(texts), probs, pooled, tokens)
        seconds = time.perf_counter() - started
        if self.after is not None:
            self.after(list(given), max_length, probs, seconds)
        return probs, seconds

    def scored(self, texts: list[str]) -> Scored | None:
        """The kept pass over ``texts`` (preprocessed here as ``predict`` does), or None."""
        if self.preprocess is not None:
            texts = self.preprocess(texts)
        return self.states.get(texts_sha256(texts))


@dataclass(frozen=True)
class Scored:
    """One scoring pass with states: preprocessed texts, probabilities, pooled last hidden
    states and full token counts (``predict_with_states``)."""

    texts: list[str]
    probs: np.ndarray
    pooled: np.ndarray
    tokens: list[int]


def _apply(preprocessing: Preprocessing | None):
    return preprocessing.apply if preprocessing is not None else None


def adapter_classifier(
    adapter_dir: Path,
    source: str,
    cache_dir: Path | None,
    preprocessing: Preprocessing | None = None,
    dtype: torch.dtype | None = None,
) -> Classifier:
    # Merged: the registered model serves the same merged function (pyfunc.load_context).
    model, tokenizer, labels = load_classifier(adapter_dir, cache_dir, merge=True)
    return Classifier(model, tokenizer, labels, source, _apply(preprocessing), dtype=dtype)


def base_classifier(
    adapter_dir: Path,
    cache_dir: Path | None,
    preprocessing: Preprocessing | None = None,
    dtype: torch.dtype | None = None,
) -> Classifier:
    """The adapter's base model alone (seeded head), with the adapter's tokenizer."""
    from transformers import AutoTokenizer

    ref, labels = read_base_ref(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return _base(ref, labels, tokenizer, cache_dir, preprocessing, dtype)


def pinned_base_classifier(
    ref: ModelRef,
    labels: list[str],
    cache_dir: Path | None,
    preprocessing: Preprocessing | None = None,
    dtype: torch.dtype | None = None,
) -> Classifier:
    """The same base before any adapter exists: the tokenizer as training loads (and then
    saves beside the adapter) it. Scores the base while the training processes compute."""
    tokenizer = load_tokenizer(ref, cache_dir)
    return _base(ref, labels, tokenizer, cache_dir, preprocessing, dtype)


def _base(ref, labels, tokenizer, cache_dir, preprocessing, dtype) -> Classifier:
    torch.manual_seed(BASE_SEED)
    model = load_base(ref, list(labels), cache_dir)
    model.eval()
    return Classifier(
        model, tokenizer, list(labels), str(ref), _apply(preprocessing), role="base", dtype=dtype
    )


def score(
    probs: np.ndarray,
    seconds: float,
    references: list[int],
    labels: list[str],
    names: tuple[str, ...],
) -> tuple[dict[str, float], list[list[int]]]:
    predictions = probs.argmax(axis=1).tolist() if len(probs) else []
    confidences = probs.max(axis=1).astype(float).tolist() if len(probs) else []
    figures, confusion = metric_modules.classification(
        predictions, references, confidences, labels, names
    )
    figures["examples"] = float(len(references))
    figures["latency_ms_per_example"] = 1000 * seconds / max(len(references), 1)
    return figures, confusion


def _length_bucket(words: int, edges: tuple[int, ...]) -> str:
    lower = 0
    for edge in edges:
        if words < edge:
            return f"<{edge}" if lower == 0 else f"{lower}-{edge - 1}"
        lower = edge
    return f">={lower}"


def slice_figures(
    rules: tuple[SliceSpec, ...],
    columns: dict[str, list],
    predictions: list[int],
    references: list[int],
) -> tuple[SliceFigure, ...]:
    """The candidate's figure per slice bucket; a missing column is a config error."""
    figures = []
    for rule in rules:
        if rule.length_buckets:
            keys = [_length_bucket(len(t.split()), rule.length_buckets) for t in columns["text"]]
            order = [_length_bucket(w, rule.length_buckets) for w in (0, *rule.length_buckets)]
        elif rule.column in columns:
            keys = [str(v) for v in columns[rule.column]]
            order = sorted(set(keys), key=lambda k: (len(k), k))
        else:
            raise ConfigError(
                f"gates.slices[{rule.name}].column: {rule.column!r} is not a column of the "
                f"prepared eval split; columns: {', '.join(columns)}"
            )
        module = metric_modules.load(rule.metric)
        present = set(keys)
        for bucket in (b for b in order if b in present):
            idx = [i for i, k in enumerate(keys) if k == bucket]
            value = module.compute(
                predictions=[predictions[i] for i in idx], references=[references[i] for i in idx]
            )[rule.metric]
            figures.append(SliceFigure(rule.name, bucket, rule.metric, len(idx), float(value)))
    return tuple(figures)


def golden_cases(
    cases: list[tuple[int, str, str]],
    candidate: Classifier,
    champion: Classifier | None,
    batch_size: int,
    max_length: int,
) -> tuple[GoldenCase, ...]:
    texts = [text for _, text, _ in cases]
    new, _ = candidate.predict(texts, batch_size, max_length)
    old = champion.predict(texts, batch_size, max_length)[0] if champion else None
    result = []
    for i, (line, text, expected) in enumerate(cases):
        was = {}
        if old is not None:
            was = {"old_label": champion.labels[old[i].argmax()], "old_score": float(old[i].max())}
        result.append(
            GoldenCase(
                line,
                text,
                expected,
                candidate.labels[new[i].argmax()],
                float(new[i].max()),
                **was,
            )
        )
    return tuple(result)


def evaluate_models(
    candidate: Classifier,
    prepared_path: str,
    spec: EvalSpec,
    gates: GateSpec,
    max_length: int,
    champion: Classifier | None = None,
    champion_version: str | None = None,
    base: Classifier | None = None,
) -> EvalReport:
    """Score every given model on the prepared eval split; the candidate in full detail."""
    data = load_prepared(prepared_path)["eval"]
    texts, references = list(data["text"]), list(data["label"])
    labels = list(candidate.labels)

    def run(model: Classifier, role: str):
        probs, seconds = model.predict(texts, spec.batch_size, max_length)
        figures, confusion = score(probs, seconds, references, labels, spec.metrics)
        return probs, ModelScores(role, model.source, figures), confusion

    probs, candidate_scores, confusion = run(candidate, "candidate")
    champion_scores, note = None, "" if champion_version else "no champion yet"
    if champion is not None and list(champion.labels) != labels:
        note = (
            f"champion v{champion_version} predicts {champion.labels}, this eval split has "
            f"{labels}: not comparable"
        )
        champion = None
    elif champion is not None:
        champion_scores = run(champion, "champion")[1]
    base_scores = run(base, "base")[1] if base is not None else None

    predictions = probs.argmax(axis=1).tolist()
    columns = {name: list(data[name]) for name in data.column_names}
    golden = ()
    if gates.golden.path is not None:
        cases = read_golden(gates.golden.path, labels)
        golden = golden_cases(cases, candidate, champion, spec.batch_size, max_length)
    return EvalReport(
        labels=tuple(labels),
        candidate=candidate_scores,
        champion=champion_scores,
        champion_version=champion_version,
        champion_note=note,
        base=base_scores,
        slices=slice_figures(gates.slices, columns, predictions, references),
        golden=golden,
        confusion=tuple(tuple(row) for row in confusion),
        predictions=tuple(predictions),
    )


def confusion_png(report: EvalReport, path: Path) -> Path | None:
    """The candidate's confusion matrix as a PNG (None when it was not computed)."""
    if not report.confusion:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(report.confusion)
    size = max(3.0, 0.9 * len(report.labels) + 1.5)
    figure = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(figure)  # thread-safe: no pyplot state, works inside Prefect's workers
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(report.labels))
    ax.set_xticks(ticks, report.labels, rotation=45, ha="right")
    ax.set_yticks(ticks, report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j, i, str(count), ha="center", va="center", color="white" if count > limit else "black"
        )
    ax.set_title(f"accuracy {report.candidate.metrics.get('accuracy', float('nan')):.3f}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
