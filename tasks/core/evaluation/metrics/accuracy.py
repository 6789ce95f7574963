"""Accuracy: the share of predictions equal to their reference (a local ``evaluate`` module).

Same name, inputs and output key as the Hub's ``accuracy`` module, so a config can switch to
the Hub's copy online; this one loads offline with ``evaluate.load(path)``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Share of predicted class ids equal to the reference class ids."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
Returns:
    accuracy (float): in [0, 1]; 0.0 for no examples.
"""


class Accuracy(evaluate.Metric):
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
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((predictions == references).mean()) if len(references) else 0.0}
