"""The model card generator and the lineage reference parser: pure, no MLflow."""

from __future__ import annotations

import pytest
import yaml

from tasks.core.config.evaluation import GateSpec
from tasks.core.config.experiment import RegistrySpec
from tasks.core.errors import LineageError
from tasks.core.evaluation.gates import decide_gates
from tasks.core.evaluation.report import EvalReport, ModelScores, SliceFigure
from tasks.core.registry import model_card
from tasks.core.registry.lineage import parse_ref
from tasks.core.registry.versions import MAX_DESCRIPTION, description_of

TAGS = {
    "base_repo_id": "org/base",
    "base_revision": "a" * 40,
    "tokenizer_revision": "a" * 40,
    "dataset_sha256": "d" * 64,
    "config_sha256": "c" * 64,
    "train_run_id": "run123",
    "git_commit": "f" * 40,
    "prefect.flow_run_id": "flow-1",
}
AUDIT = {
    "verdict": "allow",
    "policy_version": "2026.11-1",
    "intended_use": "commercial",
    "subjects": [
        {
            "subject": "model:org/base@aaa",
            "license": "apache-2.0",
            "decision": "allow",
            "reason": "on the allow list",
        },
        {
            "subject": "dataset:sst2",
            "license": "cc-by-4.0",
            "decision": "allow",
            "reason": "on the allow list",
            "approval": {"approved_by": "Jane"},
        },
    ],
}


def card(registry: RegistrySpec, champion: bool) -> str:
    report = EvalReport(
        labels=("negative", "positive"),
        candidate=ModelScores(
            "candidate",
            "run123",
            {
                "accuracy": 0.83,
                "macro_f1": 0.82,
                "ece": 0.04,
                "precision_negative": 0.8,
                "recall_negative": 0.9,
            },
        ),
        champion=ModelScores("champion", "models:/m/1", {"accuracy": 0.8}) if champion else None,
        champion_version="1" if champion else None,
        champion_note="" if champion else "no champion yet",
        base=ModelScores("base", "org/base@aaa", {"accuracy": 0.5}),
        slices=(SliceFigure("length", "<10", "accuracy", 120, 0.77),),
    )
    decision = decide_gates(report, GateSpec(absolute={"accuracy": 0.8}), "2026.11-1")
    return model_card.render(
        "sst2",
        TAGS,
        report,
        decision,
        registry,
        AUDIT,
        {"rows": {"train": 8000, "eval": 872}, "verdict": "pass"},
        {"description": "from the config", "data": {"name": "sst2", "license": "cc-by-4.0"}},
    )


def test_card_sections_and_front_matter():
    registry = RegistrySpec(
        model_name="sst2",
        intended_use="Sentiment of English reviews.",
        limitations=("English only.",),
    )
    text = card(registry, champion=True)
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "org/base"
    assert meta["datasets"] == ["sst2"] and meta["library_name"] == "peft"
    for section in (
        "## Intended use",
        "## Data",
        "## Metrics",
        "## Gates",
        "## License",
        "## Limits",
        "## Lineage",
    ):
        assert section in text
    assert "Sentiment of English reviews." in text and "- English only." in text
    assert "8000 training and 872 evaluation examples" in text
    assert "| candidate | `run123` | 0.8300 | 0.8200 | 0.0400 |" in text
    assert "| champion | `models:/m/1` | 0.8000 |" in text and "champion: v1" in text
    assert "| min_accuracy | 0.8300 | >= 0.8 | pass |" in text
    assert "approved by Jane" in text
    assert "Weakest slice: length_lt10 accuracy 0.7700 on 120 examples" in text
    assert len(text) < MAX_DESCRIPTION


def test_card_falls_back_to_the_config_description():
    text = card(RegistrySpec(model_name="sst2"), champion=False)
    assert "from the config" in text and "no champion yet" in text


def test_long_card_is_cut_with_a_pointer():
    long = "# card\n" + "\n".join(f"line {i} " + "x" * 80 for i in range(200))
    cut = description_of(long, "run9")
    assert len(cut) <= MAX_DESCRIPTION and cut.endswith("runs:/run9/model_card/README.md)")
    assert description_of("short", "run9") == "short"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("m@champion", ("m", "champion")),
        ("org.model-1@3", ("org.model-1", "3")),
        ("m", None),
        ("@champion", None),
        ("m@", None),
    ],
)
def test_parse_ref(ref, expected):
    if expected is None:
        with pytest.raises(LineageError, match="expected NAME@ALIAS"):
            parse_ref(ref)
    else:
        assert parse_ref(ref) == expected
