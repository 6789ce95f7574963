"""Per-class precision, recall, F1 and support (a local ``evaluate`` module).

Lists are indexed by class id, covering ids 0 .. the largest id seen; the caller names them
and pads classes that never occur.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

_DESCRIPTION = "Precision, recall, F1 and support of every class id."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
Returns:
    precision, recall, f1 (list[float]), support (list[int]): one entry per class id.
"""


class PerClass(evaluate.Metric):
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
            return {"precision": [], "recall": [], "f1": [], "support": []}
        ids = list(range(int(max(np.max(predictions), np.max(references))) + 1))
        precision, recall, f1, support = precision_recall_fscore_support(
            references, predictions, labels=ids, zero_division=0
        )
        return {
            "precision": [float(p) for p in precision],
            "recall": [float(r) for r in recall],
            "f1": [float(f) for f in f1],
            "support": [int(s) for s in support],
        }
