"""ROUGE-L F-measure over whitespace tokens (a local ``evaluate`` module).

For causal-LM tasks. The longest common subsequence of lower-cased tokens gives precision
(LCS / generated length) and recall (LCS / reference length); the score is their F1, averaged
over examples. Output key ``rougeL`` as in the Hub's ``rouge`` module.
"""

import datasets
import evaluate

_DESCRIPTION = "Mean ROUGE-L F1 (longest common subsequence of lower-cased whitespace tokens)."
_CITATION = "Lin. ROUGE: A Package for Automatic Evaluation of Summaries. ACL workshop 2004."
_KWARGS = """
Args:
    predictions (list[str]): generated texts.
    references (list[str]): expected texts.
Returns:
    rougeL (float): in [0, 1].
"""


def _lcs(a, b):
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _f1(prediction, reference):
    a, b = str(prediction).lower().split(), str(reference).lower().split()
    common = _lcs(a, b)
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            return {"rougeL": 0.0}
        return {"rougeL": sum(map(_f1, predictions, references)) / len(references)}
