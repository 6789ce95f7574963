"""The service's live window: the last N served inputs of each version, as features only.

Per version the window keeps, for each of its last ``window`` inputs, the predicted class,
confidence and ``Features`` (token count, words, OOV words, embedding sketch), and the last
``window`` feedback outcomes (correct or not). Raw text is never kept; only when the monitoring
policy sets ``sample_inputs`` are that many recent inputs kept, and then PII-redacted with the
project's redaction (``tasks/core/data/pii.py``) before they are stored.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from tasks.core.config.monitoring import LiveSpec
from tasks.core.data.pii import find_pii, redact
from tasks.core.monitoring.features import Features
from tasks.core.monitoring.profile import Stats, stats_of


@dataclass
class _Version:
    labels: tuple[str, ...]
    served: deque  # (label, confidence, Features)
    outcomes: deque  # bool: prediction was correct
    samples: deque  # redacted texts (empty unless sampling is on)
    total: int = 0


@dataclass
class LiveWindows:
    """Thread-safe windows of every served version (the service's predict threads add)."""

    spec: LiveSpec = field(default_factory=LiveSpec)
    _versions: dict[str, _Version] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _version(self, version: str, labels: tuple[str, ...] = ()) -> _Version:
        found = self._versions.get(version)
        if found is None:
            window, samples = self.spec.window, self.spec.sample_inputs
            found = _Version(
                labels, deque(maxlen=window), deque(maxlen=window), deque(maxlen=samples)
            )
            self._versions[version] = found
        if labels and not found.labels:
            found.labels = labels
        return found

    def add(
        self,
        version: str,
        labels: tuple[str, ...],
        texts: list[str],
        results: list[tuple[str, float]],
        feats: list[Features] | None,
    ) -> None:
        """Served ``texts`` with their results; ``feats`` None when the served form gives none
        (a pyfunc served through its DataFrame ``predict``): then only predictions and
        confidences count, and length, OOV and embedding checks say ``skip``."""
        if feats is None:
            feats = [Features(0, 0, 0, ()) for _ in texts]
        redacted = []
        if self.spec.sample_inputs:
            kinds = self.spec.pii_kinds
            redacted = [redact(t, find_pii(t, kinds)) for t in texts[-self.spec.sample_inputs :]]
        with self._lock:
            state = self._version(version, labels)
            for (label, score), feat in zip(results, feats, strict=True):
                state.served.append((label, float(score), feat))
            state.total += len(texts)
            state.samples.extend(redacted)

    def outcome(self, version: str, correct: bool) -> None:
        with self._lock:
            self._version(version).outcomes.append(bool(correct))

    def stats(self, version: str) -> Stats | None:
        with self._lock:
            state = self._versions.get(version)
            served = list(state.served) if state else []
            labels = state.labels if state else ()
        if not served:
            return None
        labels = labels or tuple(sorted({label for label, _, _ in served}))
        feats = [f for _, _, f in served]
        return stats_of(
            labels, [s[0] for s in served], [s[1] for s in served], feats, len(served), len(served)
        )

    def snapshot(self) -> dict:
        """Every version's window as JSON: what ``GET /monitoring/window`` answers."""
        out = {}
        for version in list(self._versions):
            stats = self.stats(version)
            with self._lock:
                state = self._versions[version]
                outcomes, samples, total = list(state.outcomes), list(state.samples), state.total
            out[version] = {
                "served_total": total,
                "stats": stats.to_dict() if stats else None,
                "feedback": {"count": len(outcomes), "correct": sum(outcomes)},
                "samples": samples,
            }
        return {
            "window": self.spec.window,
            "sample_inputs": self.spec.sample_inputs,
            "versions": out,
        }
