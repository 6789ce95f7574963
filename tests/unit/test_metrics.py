"""The project's local ``evaluate`` modules: loadable offline by path, combinable, correct.

Each figure is checked against scikit-learn (or a hand computation) on the same inputs.
"""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from tasks.core.config.evaluation import LOCAL_METRICS
from tasks.core.errors import ConfigError
from tasks.core.evaluation import metrics

RNG = np.random.default_rng(0)
REFS = RNG.integers(0, 3, 200).tolist()
PREDS = [r if RNG.random() < 0.7 else int(RNG.integers(0, 3)) for r in REFS]


def test_every_local_module_loads_by_path_offline():
    assert sorted(
        p.stem for p in metrics.MODULE_DIR.glob("*.py") if p.stem != "__init__"
    ) == sorted(LOCAL_METRICS)
    for name in LOCAL_METRICS:
        module = evaluate.load(metrics.module_path(name))
        assert isinstance(module, evaluate.EvaluationModule), name


def test_one_import_per_line_in_modules():
    """``evaluate`` parses imports line by line; 'import a, b' would hide a dependency."""
    for path in metrics.MODULE_DIR.glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("import "):
                assert "," not in line, (path.name, line)


CLASSIFICATION_CASES = [
    pytest.param("accuracy", {"accuracy": accuracy_score(REFS, PREDS)}, id="accuracy"),
    pytest.param("macro_f1", {"macro_f1": f1_score(REFS, PREDS, average="macro")}, id="macro_f1"),
    pytest.param(
        "per_class",
        dict(
            zip(
                ("precision", "recall"),
                [list(x) for x in precision_recall_fscore_support(REFS, PREDS)[:2]],
                strict=True,
            )
        ),
        id="per_class",
    ),
    pytest.param(
        "confusion_matrix",
        {"confusion_matrix": confusion_matrix(REFS, PREDS).tolist()},
        id="confusion_matrix",
    ),
]


@pytest.mark.parametrize(("name", "expected"), CLASSIFICATION_CASES)
def test_classification_module_matches_sklearn(name, expected):
    result = metrics.load(name).compute(predictions=PREDS, references=REFS)
    for key, value in expected.items():
        if key == "confusion_matrix":
            assert result[key] == value
        else:
            assert result[key] == pytest.approx(value), key


ECE_CASES = [
    # (predictions, references, confidences, expected ECE)
    pytest.param([1, 1], [1, 1], [1.0, 1.0], 0.0, id="confident-and-right"),
    pytest.param([1, 1], [0, 0], [1.0, 1.0], 1.0, id="confident-and-wrong"),
    pytest.param(
        [0, 1, 1, 0, 1],
        [0, 1, 0, 0, 1],
        [0.9, 0.8, 0.6, 0.7, 0.99],
        (0.1 + 0.2 + 0.6 + 0.3 + 0.01) / 5,
        id="one-per-bin",
    ),
    pytest.param([1, 1, 1, 1], [1, 1, 0, 0], [0.55, 0.55, 0.55, 0.55], 0.05, id="one-bin"),
    pytest.param([0, 1], [0, 1], [0.8, 0.8], 0.2, id="edge-lands-in-lower-bin"),
    pytest.param([], [], [], 0.0, id="empty"),
]


@pytest.mark.parametrize(("predictions", "references", "confidences", "expected"), ECE_CASES)
def test_expected_calibration_error(predictions, references, confidences, expected):
    result = metrics.load("ece").compute(
        predictions=predictions, references=references, confidences=confidences
    )
    assert result["ece"] == pytest.approx(expected)


def test_combined_suite_gives_flat_named_figures():
    probs = RNG.dirichlet(np.ones(3), size=len(REFS))
    confidences = probs.max(axis=1).tolist()
    figures, confusion = metrics.classification(
        PREDS,
        REFS,
        confidences,
        ["a", "b", "c"],
        ("accuracy", "macro_f1", "per_class", "ece", "confusion_matrix"),
    )
    assert figures["accuracy"] == pytest.approx(accuracy_score(REFS, PREDS))
    precision, recall, f1, support = precision_recall_fscore_support(REFS, PREDS)
    for i, label in enumerate("abc"):
        assert figures[f"precision_{label}"] == pytest.approx(precision[i])
        assert figures[f"recall_{label}"] == pytest.approx(recall[i])
        assert figures[f"f1_{label}"] == pytest.approx(f1[i])  # per-class F1 (issue 14)
        assert figures[f"support_{label}"] == support[i]
    assert 0 <= figures["ece"] <= 1
    assert confusion == confusion_matrix(REFS, PREDS).tolist()
    # A class never seen is padded with zeros, and the matrix keeps the configured size.
    figures, confusion = metrics.classification(
        [0, 0], [0, 0], [0.9, 0.9], ["x", "y"], ("per_class", "confusion_matrix")
    )
    assert figures["recall_y"] == 0.0 and confusion == [[2, 0], [0, 0]]


def test_evaluate_combine_accepts_the_local_paths():
    suite = evaluate.combine([metrics.module_path("accuracy"), metrics.module_path("macro_f1")])
    result = suite.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    assert result == {"accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(2 / 3)}


def test_a_hub_name_offline_is_one_clear_config_error():
    with pytest.raises(ConfigError, match="eval.metrics: 'bleurt-xyz' is not a project metric"):
        metrics.load("bleurt-xyz")


TEXT_CASES = [
    pytest.param("exact_match", ["the cat", " a  b "], ["the cat", "a b"], 1.0, id="em-whitespace"),
    pytest.param("exact_match", ["The cat"], ["the cat"], 0.0, id="em-case-sensitive"),
    pytest.param("rouge_l", ["the cat sat"], ["the cat sat"], 1.0, id="rouge-identical"),
    pytest.param(
        "rouge_l", ["the cat sat"], ["the cat sat down"], 2 * 1 * 0.75 / 1.75, id="rouge-lcs"
    ),
    pytest.param("rouge_l", ["dog"], ["the cat"], 0.0, id="rouge-disjoint"),
]


@pytest.mark.parametrize(("name", "predictions", "references", "expected"), TEXT_CASES)
def test_causal_lm_task_metrics(name, predictions, references, expected):
    figures = metrics.causal_lm(math.log(4) * 3, 3, predictions, references, name)
    assert figures["loss"] == pytest.approx(math.log(4))
    assert figures["perplexity"] == pytest.approx(4.0)
    assert figures[name] == pytest.approx(expected)
