"""Scoring candidate, champion and base on one split: slices, golden cases, report, PNG."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from tasks.core.config.evaluation import EvalSpec, GateSpec, SliceSpec
from tasks.core.config.train import LoraSpec
from tasks.core.errors import ConfigError
from tasks.core.evaluation.gates import decide_gates
from tasks.core.evaluation.scoring import (
    Classifier,
    _length_bucket,
    adapter_classifier,
    base_classifier,
    confusion_png,
    evaluate_models,
    read_golden,
    slice_figures,
)
from tests.tiny import sentiment_rows

LABELS = ["negative", "positive"]
REPO = "loraflow-test/tiny-bert"


@pytest.mark.parametrize(
    ("words", "edges", "bucket"),
    [
        (3, (10, 25), "<10"),
        (10, (10, 25), "10-24"),
        (24, (10, 25), "10-24"),
        (25, (10, 25), ">=25"),
        (1, (1,), ">=1"),
        (0, (1,), "<1"),
    ],
)
def test_length_buckets(words, edges, bucket):
    assert _length_bucket(words, edges) == bucket


def test_slice_figures_by_length_and_column():
    texts = ["a b", "a b c d e", "a", "a b c d e f"]
    rules = (
        SliceSpec(name="words", length_buckets=(3,), minimum=0.5),
        SliceSpec(name="label", column="label", minimum=0.5),
    )
    figures = slice_figures(
        rules, {"text": texts, "label": [0, 1, 0, 1]}, [0, 1, 1, 0], [0, 1, 0, 1]
    )
    assert [(f.key, f.examples, f.figure) for f in figures] == [
        ("words_lt3", 2, 0.5),
        ("words_ge3", 2, 0.5),
        ("label_0", 2, 0.5),
        ("label_1", 2, 0.5),
    ]
    with pytest.raises(ConfigError, match="'domain' is not a column of the prepared eval split"):
        slice_figures((SliceSpec(name="d", column="domain", minimum=0.5),), {"text": texts}, [], [])


GOLDEN_ERRORS = [
    pytest.param('{"text": "good"}\n', "line 1: expected", id="no-label"),
    pytest.param('{"text": "ok", "label": 1}\nnot json\n', "line 2: expected", id="bad-json"),
    pytest.param(
        '{"text": "ok", "label": "neutral"}\n', "label 'neutral' is not one of", id="unknown"
    ),
    pytest.param('{"text": "ok", "label": 2}\n', "label 2 is not one of", id="id-out-of-range"),
    pytest.param('{"text": " ", "label": 0}\n', "or the text is empty", id="empty-text"),
    pytest.param("\n\n", "no golden cases", id="empty-file"),
]


@pytest.mark.parametrize(("text", "message"), GOLDEN_ERRORS)
def test_golden_file_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "golden.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_golden(path, LABELS)
    assert str(info.value).startswith(str(path))


def test_golden_labels_by_name_or_id(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text('{"text": "great", "label": "positive"}\n\n{"text": "awful", "label": 0}\n')
    assert read_golden(path, LABELS) == [(1, "great", "positive"), (3, "awful", "negative")]


@pytest.fixture
def adapter(home, tiny_bert_dir):
    """An untrained LoRA adapter on the mirrored tiny BERT (evaluation needs no training)."""
    import torch

    from tasks.core.catalog.mirror import import_folder
    from tasks.core.training.modeling import (
        ModelRef,
        add_lora,
        load_base,
        load_tokenizer,
        save_adapter,
    )

    ref = ModelRef(REPO, import_folder(tiny_bert_dir, REPO, home.hf_hub_cache).revision)
    torch.manual_seed(1)
    model = add_lora(load_base(ref, LABELS, home.hf_hub_cache), LoraSpec(r=2, alpha=4))
    tokenizer = load_tokenizer(ref, home.hf_hub_cache)
    return save_adapter(model, tokenizer, ref, LABELS, home.work_dir / "adapter")


@pytest.fixture
def prepared(tmp_path) -> str:
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    rows = sentiment_rows(20, seed=5)
    split = Dataset.from_dict(
        {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features=features
    )
    path = tmp_path / "prepared"
    DatasetDict({"train": split, "eval": split}).save_to_disk(str(path))
    return str(path)


def test_candidate_champion_and_base_on_one_split(home, adapter, prepared, tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"text": "the film was great", "label": "positive"}) + "\n")
    gates = GateSpec(
        golden={"path": golden},
        slices=[{"name": "label", "column": "label", "minimum": 0.0, "min_examples": 1}],
    )
    candidate = adapter_classifier(adapter, "run-1", home.hf_hub_cache)
    base = base_classifier(adapter, home.hf_hub_cache)
    champion = Classifier(base.model, base.tokenizer, LABELS, "models:/m/1")
    report = evaluate_models(
        candidate,
        prepared,
        EvalSpec(),
        gates,
        16,
        champion=champion,
        champion_version="1",
        base=base,
    )
    figures = report.candidate.metrics
    assert figures["examples"] == 20 and 0 <= figures["accuracy"] <= 1
    assert {
        "macro_f1",
        "ece",
        "precision_negative",
        "recall_positive",
        "latency_ms_per_example",
    } <= set(figures)
    assert sum(map(sum, report.confusion)) == 20 and len(report.confusion) == 2
    # The champion here is the base model: same split, same code path, same figures.
    assert report.champion.metrics["accuracy"] == report.base.metrics["accuracy"]
    assert report.base.source.startswith(f"{REPO}@")
    assert [s.key for s in report.slices] == ["label_0", "label_1"]
    (case,) = report.golden
    assert case.expected == "positive" and case.old_label in LABELS
    decision = decide_gates(report, gates)
    assert [g.gate for g in decision.gates][:2] == [
        "non_inferiority_accuracy",
        "non_inferiority_macro_f1",
    ]
    png = confusion_png(report, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A champion that predicts other classes cannot be compared: the gate fails, it says why.
    other = Classifier(base.model, base.tokenizer, ["bad", "good"], "models:/m/1")
    report = evaluate_models(
        candidate, prepared, EvalSpec(), GateSpec(), 16, champion=other, champion_version="1"
    )
    assert report.champion is None and "not comparable" in report.champion_note
    assert not decide_gates(report, GateSpec()).passed


def test_the_base_is_scored_once_per_base_eval_texts_and_max_length(home, adapter, prepared):
    from tasks.core.evaluation.base_cache import CachedBase, texts_sha256
    from tasks.core.training.modeling import read_base_ref

    ref, labels = read_base_ref(adapter)
    loads, progress = [], []

    def load():
        loads.append(1)
        return base_classifier(adapter, home.hf_hub_cache)

    def cached(precision: str = "no") -> CachedBase:
        return CachedBase(
            load, home.work_dir / "eval-cache", ref.repo_id, ref.revision, labels, 0,
            precision, str(ref), on_progress=lambda *args: progress.append(args),
        )  # fmt: skip

    first = evaluate_models(
        adapter_classifier(adapter, "run-1", home.hf_hub_cache), prepared, EvalSpec(),
        GateSpec(), 16, base=(base := cached()),
    )  # fmt: skip
    assert loads == [1] and not base.hit and progress[-1][1:] == (20, 20)
    # Another adapter on the same base and eval data: the base's figures come from the cache.
    again = evaluate_models(
        adapter_classifier(adapter, "run-2", home.hf_hub_cache), prepared, EvalSpec(),
        GateSpec(), 16, base=(base := cached()),
    )  # fmt: skip
    assert loads == [1] and base.hit
    assert again.base.metrics == first.base.metrics  # latency included: the measured one
    # Other preprocessing is other texts for the base: the key covers it, the base runs again.
    changed = cached()
    changed.preprocess = lambda texts: [f"{text} !" for text in texts]
    evaluate_models(
        adapter_classifier(adapter, "run-3", home.hf_hub_cache), prepared, EvalSpec(),
        GateSpec(), 16, base=changed,
    )  # fmt: skip
    assert loads == [1, 1] and not changed.hit
    # Any ingredient changed is another key: the truncation length, the precision, the texts.
    assert len({cached().key(["a"], 16), cached().key(["a"], 32), cached("bf16").key(["a"], 16),
                cached().key(["b"], 16)}) == 4  # fmt: skip
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])


def test_the_reference_profile_comes_from_the_evaluation_pass(home, adapter, prepared, monkeypatch):
    """One pass over the eval split gives the figures and the monitor's reference profile: the
    profile built from the kept states equals one from a separate pass, and no second pass runs."""
    from tasks.core.evaluation import scoring
    from tasks.core.monitoring.profile import profile_from_scores, profile_split
    from tasks.core.training import modeling

    candidate = adapter_classifier(adapter, "run-1", home.hf_hub_cache)
    candidate.keep_states = True
    passes = []
    counted = modeling.predict_with_states

    def counting(model, tokenizer, texts, *args, **kwargs):
        passes.append(len(texts))
        return counted(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(scoring, "predict_with_states", counting)
    evaluate_models(candidate, prepared, EvalSpec(), GateSpec(), 16)
    texts = list(Dataset.load_from_disk(f"{prepared}/eval")["text"])
    kept = candidate.scored(texts)
    assert passes == [20] and kept is not None and kept.texts == texts
    assert candidate.scored(texts[:3]) is None  # another text list was never scored

    from_pass = profile_from_scores(
        LABELS, kept.texts, kept.probs, kept.pooled, kept.tokens, texts, 0.5
    )
    separate = profile_split(
        candidate.model, candidate.tokenizer, LABELS, texts, texts, 16, 16, 0.5
    )
    assert from_pass.stats.predictions == separate.stats.predictions
    assert from_pass.stats.tokens == separate.stats.tokens
    assert from_pass.vocabulary == separate.vocabulary
    assert len(from_pass.stats.sketches) == len(separate.stats.sketches) == 20


def test_the_base_scored_before_training_is_what_the_evaluation_reads(home, adapter, prepared):
    """tasks/base_scores.py scores the base while training runs, before any adapter exists;
    the evaluation must then find exactly those scores under its own key."""
    import numpy as np

    from tasks.core.data.prepare import load_prepared
    from tasks.core.evaluation.scoring import pinned_base_classifier
    from tasks.core.training.modeling import read_base_ref
    from tasks.gate import base_scorer, cached_base, eval_precision

    ref, labels = read_base_ref(adapter)
    precision = eval_precision(EvalSpec())
    texts = list(load_prepared(prepared)["eval"]["text"])

    def pinned():
        return pinned_base_classifier(ref, labels, home.hf_hub_cache, None, precision.dtype)

    early = base_scorer(ref, labels, pinned, home, precision, None)
    probs, _ = early.predict(texts, 8, 16)
    assert not early.hit
    later = cached_base(adapter, home, precision, None)  # what the evaluation builds
    read, _ = later.predict(texts, 8, 16)
    assert later.hit and read.tolist() == probs.tolist()
    # Scored from the adapter instead (the tokenizer training saved): the same figures.
    direct, _ = base_classifier(adapter, home.hf_hub_cache, None, precision.dtype).predict(
        texts, 8, 16
    )
    np.testing.assert_allclose(direct, probs, atol=1e-6)


GIB = 2**30


@pytest.mark.parametrize(
    ("score", "task", "launcher", "parameters", "available", "why"),
    [
        (True, "sequence-classification", "subprocess", 22_700_000, 8 * GIB, None),
        (True, "sequence-classification", "subprocess", 22_700_000, None, None),
        (False, "sequence-classification", "subprocess", 22_700_000, None, "does not score"),
        (True, "causal-lm", "subprocess", 22_700_000, None, "generator"),
        (True, "sequence-classification", "in-process", 22_700_000, None, "in this process"),
        (True, "sequence-classification", "subprocess", None, 8 * GIB, "size is unknown"),
        # 7B parameters need ~52 GiB to score beside training: not with 16 GiB free.
        (True, "sequence-classification", "subprocess", 7_000_000_000, 16 * GIB, "not fit"),
    ],
)
def test_when_the_base_is_scored_while_training_runs(
    score, task, launcher, parameters, available, why
):
    from tasks.core.evaluation.base_cache import early_scoring_skipped

    got = early_scoring_skipped(score, task, launcher, parameters, available)
    assert got is None if why is None else why in got


def test_a_cached_base_is_read_without_importing_the_scoring_code(tmp_path):
    """A cached re-run waits for score-base: on a hit it must not import torch's model code
    and PEFT (measured: 3.1 s of such a re-run's 3.3 s flow before this was fixed)."""
    import subprocess
    import sys

    code = f"""
import sys
from pathlib import Path
import numpy as np
from tasks.core.evaluation.base_cache import write
from tasks.core.home import Home
from tasks.core.training.refs import ModelRef
from tasks.gate import base_scorer

class Precision:
    mode = "no"

def load():
    raise AssertionError("the base was loaded although its scores are cached")

home = Home(Path({str(tmp_path / "home")!r}))
scorer = base_scorer(ModelRef("org/base", "a" * 40), ["neg", "pos"], load, home, Precision, None)
texts = ["a good film", "a bad plot"]
write(home.work_dir / "eval-cache" / "base", scorer.key(texts, 16), np.eye(2), 0.5)
probs, seconds = scorer.predict(texts, 8, 16)
assert scorer.hit and probs.tolist() == [[1.0, 0.0], [0.0, 1.0]] and seconds == 0.5
heavy = [m for m in ("tasks.core.evaluation.scoring", "peft") if m in sys.modules]
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
