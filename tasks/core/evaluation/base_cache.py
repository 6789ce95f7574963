"""The base model's scores, computed once per (base repo@sha, eval data, max_length) and reused.

Every evaluation scores the base model without the adapter for reference; that figure only
depends on the base (repo id + pinned revision, the class names of its seeded head), the eval
texts after the run's preprocessing (so the key covers the preprocessing), the truncation
length and the precision of the batches. So its class probabilities are
kept under the state home (``work/eval-cache/base/<key>.npz``) and a later evaluation of any
adapter on the same base and data reads them instead of loading and running the base again.
The file also keeps how long the scoring took, so the recorded latency stays the measured one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when what is cached changes meaning
BASE_SEED = 0  # the base model's classification head is freshly initialised: seed it


def texts_sha256(texts: list[str]) -> str:
    """sha256 of the eval texts, in order (the eval data's identity as the base sees it)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def base_key(
    repo_id: str,
    revision: str,
    labels: list[str],
    seed: int,
    texts_sha: str,
    max_length: int,
    precision: str,
) -> str:
    """The cache key of one base scoring; any change in an ingredient is another key."""
    parts = [CACHE_VERSION, repo_id, revision, list(labels), seed, texts_sha, max_length, precision]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def read(root: Path, key: str) -> tuple[np.ndarray, float] | None:
    """(probabilities, seconds the scoring took) of ``key``, or None when not cached."""
    path = Path(root) / f"{key}.npz"
    try:
        with np.load(path) as data:
            return data["probs"], float(data["seconds"])
    except (OSError, KeyError, ValueError):  # absent, half-written by a crash, or foreign
        return None


def write(root: Path, key: str, probs: np.ndarray, seconds: float) -> Path:
    """Store atomically (a temporary file renamed), so a reader never sees half a file."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, probs=probs, seconds=np.float64(seconds))
    path = root / f"{key}.npz"
    os.replace(tmp, path)
    return path


@dataclass
class CachedBase:
    """Scores the base like a ``Classifier`` would, from the cache when it can.

    ``load`` builds the base ``Classifier`` without preprocessing (only on a miss): the texts
    are preprocessed here first, and the key is taken over what the base really reads; ``hit``
    says whether the last prediction came from the cache.
    """

    load: object  # () -> Classifier
    root: Path
    repo_id: str
    revision: str
    labels: list[str]
    seed: int
    precision: str
    source: str
    preprocess: object = None  # (texts) -> texts: the run's preprocessing, None for none
    on_progress: object = None  # handed to the loaded classifier on a miss
    hit: bool = field(default=False, init=False)

    def key(self, texts: list[str], max_length: int) -> str:
        return base_key(
            self.repo_id, self.revision, self.labels, self.seed, texts_sha256(texts),
            max_length, self.precision,
        )  # fmt: skip

    def predict(self, texts: list[str], batch_size: int, max_length: int):
        if self.preprocess is not None:
            texts = self.preprocess(texts)
        key = self.key(texts, max_length)
        found = read(self.root, key)
        self.hit = found is not None
        if found is not None:
            return found
        classifier = self.load()
        classifier.on_progress = self.on_progress
        probs, seconds = classifier.predict(texts, batch_size, max_length)
        write(self.root, key, probs, seconds)
        return probs, seconds


BYTES_PER_PARAMETER = 8  # fp32 weights (4) and as much again for loading and activations


def early_scoring_skipped(
    score_base: bool,
    task: str,
    launcher: str,
    parameters: int | None = None,
    available_bytes: int | None = None,
) -> str | None:
    """Why the base is not scored while training runs (None: it is).

    The pipeline's process is free while the training processes compute: the base's scores
    (which do not depend on the training) are computed then and the evaluation reads them
    here. Not for a generator (its base is scored by generation, not these probabilities),
    not beside training in this same process (``launcher: in-process``: the base's head is
    seeded from torch's global generator, which that training draws from too), and not when
    the base, loaded beside the training processes' own copies, might not fit in memory
    (``parameters`` x ``BYTES_PER_PARAMETER`` over ``available_bytes``, or its size unknown):
    after training, the evaluation loads it once they are gone, as before.
    """
    if not score_base:
        return "the gate policy does not score the base model"
    if task != "sequence-classification":
        return "a generator's base is scored by the evaluation"
    if launcher == "in-process":
        return "training runs in this process (launcher: in-process)"
    if not parameters:
        return "the base's size is unknown: scored after training, when memory is free"
    need = parameters * BYTES_PER_PARAMETER
    if available_bytes is not None and need > available_bytes:
        return (
            f"the base ({parameters / 1e6:.0f}M parameters, ~{need / 2**30:.1f} GiB to score) "
            f"might not fit beside training ({available_bytes / 2**30:.1f} GiB available)"
        )
    return None
