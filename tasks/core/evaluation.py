"""Score an adapter on the prepared eval split: accuracy, macro-F1, per-class figures, latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tasks.core.data import load_prepared
from tasks.core.modeling import load_classifier, predict_proba


def classification_metrics(
    y_true: list[int], y_pred: list[int], labels: list[str]
) -> dict[str, float]:
    ids = list(range(len(labels)))
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
    }
    for i, name in enumerate(labels):
        metrics[f"precision_{name}"] = float(precision[i])
        metrics[f"recall_{name}"] = float(recall[i])
        metrics[f"support_{name}"] = float(support[i])
    return metrics


def evaluate_adapter(
    adapter_dir: Path,
    prepared_path: str,
    batch_size: int,
    max_length: int,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    model, tokenizer, labels = load_classifier(adapter_dir, cache_dir)
    data = load_prepared(prepared_path)["eval"]
    started = time.perf_counter()
    probs = predict_proba(model, tokenizer, data["text"], batch_size, max_length)
    elapsed = time.perf_counter() - started
    metrics = classification_metrics(data["label"], np.argmax(probs, axis=1).tolist(), labels)
    metrics["examples"] = float(len(data))
    metrics["latency_ms_per_example"] = 1000 * elapsed / max(len(data), 1)
    return metrics
