"""The project's metrics as local ``evaluate`` modules, and the suites built from them.

The Hub's metric scripts cannot be fetched offline, so every metric the pipeline needs ships
here as a module file that ``evaluate.load(path)`` reads from disk (one import per line:
``evaluate`` parses imports line by line to check dependencies). Names keep the Hub's
meaning, and a name that is not a project module is passed to ``evaluate.load`` as a Hub id,
so online users can add any Hub metric to ``eval.metrics``.
"""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import numpy as np

from tasks.core.config.evaluation import LOCAL_METRICS
from tasks.core.errors import MetricUnavailable

MODULE_DIR = Path(__file__).resolve().parent
# Causal-LM task metrics: config name -> output key of its module.
TASK_METRIC_KEYS = {"exact_match": "exact_match", "rouge_l": "rougeL"}


def module_path(name: str) -> str:
    """The local module file for a project metric; any other name is a Hub id."""
    return str(MODULE_DIR / f"{name}.py") if name in LOCAL_METRICS else name


def load(name: str) -> evaluate.EvaluationModule:
    try:
        return evaluate.load(module_path(name), keep_in_memory=True)
    except Exception as exc:  # the Hub path raises connection, file and value errors alike
        if name in LOCAL_METRICS:
            raise
        raise MetricUnavailable(
            f"eval.metrics: {name!r} is not a project metric ({', '.join(LOCAL_METRICS)}) and "
            f"could not be loaded from the Hub (offline?): {exc}"
        ) from exc


def combine(names: tuple[str, ...] | list[str]) -> evaluate.CombinedEvaluations:
    return evaluate.combine([load(name) for name in names])


def classification(
    predictions: list[int],
    references: list[int],
    confidences: list[float],
    labels: list[str] | tuple[str, ...],
    names: tuple[str, ...] | list[str],
) -> tuple[dict[str, float], list[list[int]]]:
    """Flat figures (per-class ones named by class) and the confusion matrix, if asked for.

    Inputs go in with ``add_batch`` so each combined module receives only the columns it
    declares (``confidences`` reaches ECE alone); ``compute`` then takes no options.
    """
    suite = combine(names)
    suite.add_batch(predictions=predictions, references=references, confidences=confidences)
    results = suite.compute()
    metrics: dict[str, float] = {}
    confusion: list[list[int]] = []
    for key, value in results.items():
        if key in ("precision", "recall", "f1", "support"):
            padded = list(value) + [0] * (len(labels) - len(value))
            metrics |= {f"{key}_{name}": float(v) for name, v in zip(labels, padded, strict=False)}
        elif key == "confusion_matrix":
            size = len(labels)
            confusion = [[0] * size for _ in range(size)]
            for i, row in enumerate(value):
                for j, count in enumerate(row):
                    confusion[i][j] = int(count)
        elif isinstance(value, int | float | np.floating | np.integer):
            metrics[key] = float(value)
    return metrics, confusion


def causal_lm(
    token_nll: float,
    tokens: int,
    predictions: list[str],
    references: list[str],
    task_metric: str,
) -> dict[str, float]:
    """Loss and perplexity from summed token negative log-likelihood, plus the task metric."""
    if task_metric not in TASK_METRIC_KEYS:
        raise ValueError(f"task metric {task_metric!r}; allowed: {', '.join(TASK_METRIC_KEYS)}")
    loss = token_nll / tokens if tokens else float("nan")
    task = load(task_metric).compute(predictions=predictions, references=references)
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if tokens else float("nan"),
        task_metric: float(task[TASK_METRIC_KEYS[task_metric]]),
    }
