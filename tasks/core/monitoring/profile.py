"""The reference profile: what the model saw, stored with the version at registration.

Built on the evaluation split by the evaluated model itself (one forward pass that also keeps
the encoder's pooled states): predicted-class shares, confidences, token lengths, the
out-of-vocabulary share of its words against the training split's vocabulary, and a sample of
embedding sketches. The live window (``window.py``) keeps the same statistics of served
inputs, so the monitor compares like with like. Samples are capped so the profile stays small.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.monitoring.features import SKETCH_DIM, SKETCH_SEED, Features

SCHEMA = 1
MAX_SAMPLE = 1000  # numeric samples kept (confidence, tokens)
MAX_SKETCHES = 512
ARTIFACT = "monitoring/reference_profile.json"  # in the evaluation record
MODEL_ARTIFACT = "reference_profile"  # artifact key of the registered pyfunc


@dataclass(frozen=True)
class Stats:
    """Distribution statistics of a set of inputs: the profile's and a live window's shape."""

    count: int
    labels: tuple[str, ...]
    predictions: dict[str, int]
    confidence: tuple[float, ...]
    tokens: tuple[int, ...]
    words: int
    oov: int
    sketches: tuple[tuple[float, ...], ...]

    @property
    def oov_rate(self) -> float | None:
        return self.oov / self.words if self.words else None

    def shares(self) -> dict[str, float]:
        total = sum(self.predictions.values())
        return {k: (self.predictions.get(k, 0) / total if total else 0.0) for k in self.labels}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Stats:
        return cls(
            count=int(data["count"]),
            labels=tuple(data["labels"]),
            predictions={str(k): int(v) for k, v in data["predictions"].items()},
            confidence=tuple(float(v) for v in data["confidence"]),
            tokens=tuple(int(v) for v in data["tokens"]),
            words=int(data["words"]),
            oov=int(data["oov"]),
            sketches=tuple(tuple(float(x) for x in s) for s in data["sketches"]),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    stats: Stats
    vocabulary: tuple[str, ...]  # hashes of the training split's words (features.word_hash)
    accuracy: float | None = None  # the evaluation's accuracy on the same split
    sketch: dict = field(default_factory=lambda: {"dim": SKETCH_DIM, "seed": SKETCH_SEED})
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "accuracy": self.accuracy,
            "sketch": self.sketch,
            "stats": self.stats.to_dict(),
            "vocabulary": list(self.vocabulary),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceProfile:
        return cls(
            stats=Stats.from_dict(data["stats"]),
            vocabulary=tuple(data.get("vocabulary", ())),
            accuracy=data.get("accuracy"),
            sketch=data.get("sketch", {}),
            schema=int(data.get("schema", SCHEMA)),
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def read(cls, path: str | Path) -> ReferenceProfile:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _spread(values: Sequence, cap: int) -> list:
    """At most ``cap`` values spread evenly over the sequence (deterministic)."""
    if len(values) <= cap:
        return list(values)
    picks = np.linspace(0, len(values) - 1, cap).round().astype(int)
    return [values[i] for i in picks]


def stats_of(
    labels: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float],
    feats: Sequence[Features],
    cap: int = MAX_SAMPLE,
    sketch_cap: int = MAX_SKETCHES,
) -> Stats:
    counts = {label: 0 for label in labels}
    for label in predicted:
        counts[label] = counts.get(label, 0) + 1
    return Stats(
        count=len(predicted),
        labels=tuple(labels),
        predictions=counts,
        confidence=tuple(round(float(c), 5) for c in _spread(list(confidence), cap)),
        tokens=tuple(f.tokens for f in _spread(list(feats), cap)),
        words=sum(f.words for f in feats),
        oov=sum(f.oov for f in feats),
        sketches=tuple(f.sketch for f in _spread(list(feats), sketch_cap) if f.sketch),
    )


def build_profile(
    labels: Sequence[str],
    probs: np.ndarray,
    feats: Sequence[Features],
    vocab: frozenset[str],
    accuracy: float | None = None,
) -> ReferenceProfile:
    """The profile of an evaluation split from the model's probabilities and features."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    predicted = [labels[i] for i in best]
    confidence = probs.max(axis=1).tolist() if len(probs) else []
    stats = stats_of(labels, predicted, confidence, feats)
    return ReferenceProfile(stats, tuple(sorted(vocab)), accuracy)


def score_with_features(
    model, tokenizer, texts: list[str], vocab: frozenset[str], batch_size: int, max_length: int,
    dtype=None,
) -> tuple[np.ndarray, list[Features]]:  # fmt: skip
    """Class probabilities and each text's ``Features`` from one forward pass of ``model``
    (already preprocessed texts: the model sees what the profile counts); ``dtype`` the
    autocast precision, as ``predict_proba``."""
    from tasks.core.monitoring.features import features
    from tasks.core.training.modeling import predict_with_states

    probs, pooled, tokens = predict_with_states(
        model, tokenizer, texts, batch_size, max_length, dtype
    )
    return probs, features(texts, tokens, pooled, vocab)


def profile_split(
    model,
    tokenizer,
    labels: Sequence[str],
    eval_texts: list[str],
    train_texts: list[str],
    max_length: int,
    batch_size: int = 64,
    accuracy: float | None = None,
) -> ReferenceProfile:
    """The reference profile of an evaluation split (texts already preprocessed), with the
    vocabulary of the training split; at most ``MAX_SAMPLE`` texts, spread over the split, are
    run through the encoder (for an evaluation that already scored the split with its states,
    ``profile_from_scores`` builds the same profile without a second pass)."""
    from tasks.core.training.modeling import predict_with_states

    picked = _spread(eval_texts, max(MAX_SAMPLE, MAX_SKETCHES))
    probs, pooled, tokens = predict_with_states(model, tokenizer, picked, batch_size, max_length)
    return profile_from_scores(labels, picked, probs, pooled, tokens, train_texts, accuracy)


def profile_from_scores(
    labels: Sequence[str],
    eval_texts: list[str],
    probs: np.ndarray,
    pooled: np.ndarray,
    tokens: Sequence[int],
    train_texts: list[str],
    accuracy: float | None = None,
) -> ReferenceProfile:
    """The reference profile from one scoring pass over the (preprocessed) eval split: its
    probabilities, pooled last hidden states and token counts, as ``predict_with_states``
    returns them; at most ``MAX_SAMPLE`` texts, spread over the split, are profiled."""
    from tasks.core.monitoring.features import features, vocabulary

    vocab = vocabulary(train_texts)
    picked = _spread(range(len(eval_texts)), max(MAX_SAMPLE, MAX_SKETCHES))
    feats = features(
        [eval_texts[i] for i in picked], [tokens[i] for i in picked], pooled[picked], vocab
    )
    return build_profile(labels, probs[picked], feats, vocab, accuracy)
