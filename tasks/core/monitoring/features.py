"""Per-input features the reference profile and the live window share: no raw text in them.

An input becomes its token count (the model's tokenizer), its word count and how many of its
words the training data never held (out-of-vocabulary), and an embedding sketch: the encoder's
mean-pooled last hidden state projected onto ``SKETCH_DIM`` fixed random axes (Johnson-
Lindenstrauss: distances survive, the text does not). The vocabulary is kept as short hashes of
lower-cased words, so the profile stores no training text either.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SKETCH_DIM = 8
SKETCH_SEED = 17  # the projection is a function of (hidden size, seed): same in profile and service
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class Features:
    """What the monitor keeps of one input."""

    tokens: int
    words: int
    oov: int
    sketch: tuple[float, ...]


def words_of(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def word_hash(word: str) -> str:
    return hashlib.blake2b(word.encode(), digest_size=4).hexdigest()


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """Hashes of every word in ``texts`` (the training split: what the model saw)."""
    return frozenset(word_hash(w) for text in texts for w in set(words_of(text)))


def oov_count(text: str, vocab: frozenset[str]) -> tuple[int, int]:
    """(words, words not in ``vocab``); with no vocabulary nothing is counted as OOV."""
    found = words_of(text)
    if not vocab:
        return len(found), 0
    return len(found), sum(word_hash(w) not in vocab for w in found)


def projection(hidden: int, dim: int = SKETCH_DIM, seed: int = SKETCH_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((hidden, dim)) / np.sqrt(dim)).astype(np.float32)


def sketches(pooled: np.ndarray) -> np.ndarray:
    """Project pooled encoder states (n x hidden) onto the fixed sketch axes (n x SKETCH_DIM)."""
    if pooled.size == 0:
        return np.zeros((0, SKETCH_DIM), dtype=np.float32)
    return pooled.astype(np.float32) @ projection(pooled.shape[1])


def features(
    texts: list[str], tokens: list[int], pooled: np.ndarray, vocab: frozenset[str]
) -> list[Features]:
    projected = sketches(pooled)
    out = []
    for i, text in enumerate(texts):
        words, oov = oov_count(text, vocab)
        sketch = tuple(round(float(v), 5) for v in projected[i]) if len(projected) else ()
        out.append(Features(int(tokens[i]), words, oov, sketch))
    return out
