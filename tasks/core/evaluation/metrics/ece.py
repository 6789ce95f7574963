"""Expected calibration error (a local ``evaluate`` module).

Predictions are grouped into equal-width bins of confidence (the probability the model gave
its predicted class); ECE is the example-weighted mean gap between each bin's accuracy and
its mean confidence (Guo et al., 2017). 0 is perfectly calibrated; lower is better.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Expected calibration error over equal-width confidence bins."
_CITATION = "Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017."
_KWARGS = """
Args:
    predictions (list[int]): predicted class ids.
    references (list[int]): true class ids.
    confidences (list[float]): probability of each predicted class, in [0, 1].
    n_bins (int): number of equal-width bins, default 10.
Returns:
    ece (float): in [0, 1].
"""


class ExpectedCalibrationError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                    "confidences": datasets.Value("float64"),
                }
            ),
        )

    def _compute(self, predictions, references, confidences, n_bins=10):
        confidences = np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0)
        if len(confidences) == 0:
            return {"ece": 0.0}
        correct = np.asarray(predictions) == np.asarray(references)
        # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 joins bin 0.
        inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
        bins = np.searchsorted(inner_edges, confidences, side="left")
        gap = 0.0
        for b in np.unique(bins):
            members = bins == b
            gap += members.sum() * abs(correct[members].mean() - confidences[members].mean())
        return {"ece": float(gap / len(confidences))}
