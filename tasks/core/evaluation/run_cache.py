"""A registered version's scores, kept from its own evaluation and reused as the champion's.

The champion is scored on every challenger's eval split. Its model is a training run's adapter
with that run's preprocessing, served as it was evaluated, so its class probabilities on given
texts depend only on (training run, texts, truncation length, precision): the same pure
function as the base scores (``base_cache``). The candidate's evaluation writes them under the
state home (``work/eval-cache/runs/<key>.npz``, keyed by the raw texts: the run fixes its own
preprocessing); when that run is the champion of a later evaluation on the same texts, its
figures are read back and the model is not even loaded. A miss loads it as served and scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.evaluation.base_cache import read, texts_sha256, write

CACHE_VERSION = 1  # bump when what is cached changes meaning


def run_key(run_id: str, texts_sha: str, max_length: int, precision: str) -> str:
    """The cache key of one scoring of a training run's model; any change is another key."""
    parts = [CACHE_VERSION, "run", run_id, texts_sha, max_length, precision]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def keeper(root: Path, run_id: str, precision: str):
    """``after(texts, max_length, probs, seconds)`` for the candidate's ``Classifier``: keeps
    each of its scorings for the day its run is the champion."""

    def keep(texts: list[str], max_length: int, probs: np.ndarray, seconds: float) -> None:
        write(root, run_key(run_id, texts_sha256(texts), max_length, precision), probs, seconds)

    return keep


@dataclass
class CachedRun:
    """Scores a registered version like a ``Classifier`` would, from the cache when it can.

    ``load`` builds the version's ``Classifier`` as it is served (only on a miss; the loaded
    one scores the rest). ``hit`` says whether every prediction so far came from the cache.
    """

    load: Callable[[], object]
    root: Path
    run_id: str
    labels: list[str]
    precision: str
    source: str
    role: str = "champion"
    dtype: object = None
    on_progress: object = None
    hit: bool = field(default=True, init=False)
    _model: object = field(default=None, init=False, repr=False)

    def predict(self, texts: list[str], batch_size: int, max_length: int):
        key = run_key(self.run_id, texts_sha256(texts), max_length, self.precision)
        found = read(self.root, key)
        if found is not None:
            return found
        self.hit = False
        if self._model is None:
            self._model = self.load()
            self._model.dtype, self._model.role = self.dtype, self.role
        self._model.on_progress = self.on_progress
        probs, seconds = self._model.predict(texts, batch_size, max_length)
        write(self.root, key, probs, seconds)
        return probs, seconds
