"""Confusion matrix (a local ``evaluate`` module): rows are true classes, columns predicted."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix

_DESCRIPTION = "Counts of (true class, predicted class) pairs over class ids 0 .. the largest seen."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
Returns:
    confusion_matrix (list[list[int]]): [true id][predicted id] counts.
"""


class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            return {"confusion_matrix": []}
        ids = list(range(int(max(np.max(predictions), np.max(references))) + 1))
        matrix = confusion_matrix(references, predictions, labels=ids)
        return {"confusion_matrix": matrix.tolist()}
