"""Exact match of generated text against references (a local ``evaluate`` module).

For causal-LM tasks. Texts are compared after trimming surrounding whitespace and collapsing
inner runs of whitespace; ``ignore_case`` also folds case.
"""

import datasets
import evaluate

_DESCRIPTION = "Share of generated texts equal to their reference after whitespace normalisation."
_KWARGS = """
Args:
    predictions (list[str]): generated texts.
    references (list[str]): expected texts.
    ignore_case (bool): fold case before comparing, default False.
Returns:
    exact_match (float): in [0, 1].
"""


def _normalise(text, ignore_case):
    text = " ".join(str(text).split())
    return text.lower() if ignore_case else text


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ignore_case=False):
        if len(references) == 0:
            return {"exact_match": 0.0}
        hits = sum(
            _normalise(p, ignore_case) == _normalise(r, ignore_case)
            for p, r in zip(predictions, references, strict=True)
        )
        return {"exact_match": hits / len(references)}
