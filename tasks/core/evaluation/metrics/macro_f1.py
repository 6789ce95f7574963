"""Macro-F1: the unweighted mean of per-class F1 (a local ``evaluate`` module).

The Hub's ``f1`` needs ``average="macro"`` at compute time, which ``evaluate.combine`` would
pass to every combined module; a module of its own keeps the suite free of compute options.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "Unweighted mean of per-class F1 over the classes seen in predictions or references."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
Returns:
    macro_f1 (float): in [0, 1]; a class never predicted counts as F1 0.
"""


class MacroF1(evaluate.Metric):
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
            return {"macro_f1": 0.0}
        score = f1_score(references, predictions, average="macro", zero_division=0)
        return {"macro_f1": float(score)}
