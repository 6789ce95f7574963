"""The optimised serving form: its gate (pure), its build on a real tiny model (merged LoRA,
ONNX Runtime), its record on a registered version, and the service serving it over HTTP."""

from __future__ import annotations

import json
import time

import httpx
import mlflow
import pytest

from tasks.core.config.evaluation import ServingFormSpec
from tasks.core.data.preprocess import Preprocessing
from tasks.core.registry import serving_form as forms
from tasks.core.registry.history import history
from tasks.core.serving.runner import wait_ready
from tasks.core.serving.runtime import EXACT, OnnxClassifier, load_version, served_form
from tasks.core.tracking import client
from tasks.core.training.modeling import load_classifier, predict_proba
from tests.serving.conftest import NAME, start
from tests.serving.models import LABELS, register_version, train_adapter
from tests.serving.test_service import total
from tests.tiny import sentiment_rows

POLICY = "configs/policies/monitoring.yaml"
SPEC = ServingFormSpec()  # the gate policy's defaults: 99 % agreement, 0.5-point accuracy drop


def figures(form: str, flipped: int, n: int = 1000) -> forms.FormFigures:
    """A form that flips ``flipped`` of the exact model's right answers (exact: 90 % right)."""
    truth = [1] * 900 + [0] * (n - 900)
    exact = [1] * n
    predictions = [0] * flipped + [1] * (n - flipped)
    return forms.judge_form(form, predictions, exact, truth, 1.0, SPEC)


def test_a_form_passes_only_with_enough_agreement_and_accuracy():
    good = figures("onnx-fp32", flipped=0)
    assert good.passed and good.agreement == 1.0 and good.accuracy_delta == 0.0
    assert good.ms_per_example == pytest.approx(1.0)
    low = figures("onnx-int8", flipped=15)  # 98.5 % agreement, 1.5 points less accurate
    assert not low.passed and low.reasons[0] == "agreement 0.9850 < 0.99"
    assert low.reasons[1] == "accuracy delta -0.0150 < -0.005"
    edge = figures("onnx-int8", flipped=5)  # exactly at both thresholds
    assert edge.passed, edge.reasons


def test_the_first_passing_candidate_is_served_else_the_exact_model():
    fail = figures("onnx-int8", flipped=20)
    ok = figures("onnx-fp32", flipped=0)
    both = ServingFormSpec(candidates=("onnx-int8", "onnx-fp32"))
    decision = forms.decide_serving_form([ok, fail], both, 0.9, 12.0, "2026.11-1")
    assert (decision.chosen, decision.passed) == ("onnx-fp32", True)
    assert [f.form for f in decision.forms] == ["onnx-int8", "onnx-fp32"]  # configured order
    tags = decision.tags()
    assert tags["serving_form"] == "onnx-fp32" and tags["serving_form.passed"] == "true"
    assert tags["serving_form.onnx-int8"].startswith("fail: agreement 0.9800 >= 0.99")
    assert served_form(tags) == "onnx-fp32"
    record = decision.to_dict()
    assert record["decision"] == "pass" and record["min_agreement"] == 0.99
    assert record["forms"][0]["reasons"] and record["policy_version"] == "2026.11-1"

    none = forms.decide_serving_form([fail], SPEC, 0.9)
    assert (none.chosen, none.passed) == (EXACT, False)
    assert none.note.startswith("no optimised form passed its gate: onnx-int8 agreement 0.9800")
    assert served_form(none.tags()) == EXACT
    assert served_form({}) == EXACT  # a version registered before serving forms existed
    assert served_form({"serving_form": "onnx-int8", "serving_form.passed": "false"}) == EXACT


@pytest.fixture
def trained(home, mirrored, tmp_path):  # noqa: F811 - mirrored is a fixture
    """A tiny LoRA classifier trained to ~0.97 accuracy, its eval texts and labels."""
    rows = sentiment_rows(192, seed=3)
    adapter = train_adapter(home.hf_hub_cache, mirrored, rows, tmp_path / "adapter", seed=0)
    held_out = sentiment_rows(96, seed=4)
    return adapter, [t for _, t in held_out], [y for y, _ in held_out]


def test_the_merged_onnx_forms_agree_with_the_exact_model_and_are_recorded(
    home, trained, tmp_path, monkeypatch
):
    adapter, texts, labels = trained
    model, tokenizer, names = load_classifier(adapter, home.hf_hub_cache)
    exact = predict_proba(model, tokenizer, texts, batch_size=16).argmax(1).tolist()
    split = forms.EvalSplit(texts, labels, exact)
    measured, folders = [], {}
    for form in ("onnx-int8", "onnx-int8-token", "onnx-fp32"):
        one = ServingFormSpec(candidates=(form,))
        got, built = forms.measure_forms(
            model, tokenizer, names, split, one, tmp_path / form, max_length=16
        )
        measured, folders = measured + got, folders | built
    assert [f.form for f in measured] == ["onnx-int8", "onnx-int8-token", "onnx-fp32"]
    by_form = {f.form: f for f in measured}
    assert by_form["onnx-fp32"].agreement == 1.0  # the LoRA merged: the same function
    assert by_form["onnx-int8"].agreement >= 0.95
    assert by_form["onnx-int8-token"].agreement >= 0.95
    fp32 = OnnxClassifier(folders["onnx-fp32"])
    assert fp32.labels == LABELS and len(fp32.predict(texts[:3])) == 3
    # The speed a form must beat: the exact model as served (merged), on the same split.
    exact_ms = forms.exact_ms_per_example(model, tokenizer, texts, 16, 16)
    assert exact_ms > 0 and hasattr(model, "merge_and_unload")  # the caller's keeps its adapter
    int8 = folders["onnx-int8"] / "model.onnx"
    assert int8.stat().st_size < (folders["onnx-fp32"] / "model.onnx").stat().st_size
    # A form not faster than the exact model on the timing sample could not be served: its
    # agreement is not measured (the whole split is not scored), and it says why.
    timings = {}
    (slow,), _ = forms.measure_forms(
        model, tokenizer, names, split, ServingFormSpec(candidates=("onnx-fp32",)),
        tmp_path / "slow", max_length=16, exact_ms=1e-6, timings=timings,
    )  # fmt: skip
    assert not slow.passed and slow.examples == 0 and timings["export_s"] > 0
    # With the export given, building the int8 rewrite is still building time (overhead).
    built, spent, build = {}, [], forms.build_form

    def timed(*args):
        started = time.perf_counter()
        folder = build(*args)
        spent.append(time.perf_counter() - started)
        return folder

    monkeypatch.setattr(forms, "build_form", timed)
    forms.measure_forms(
        model, tokenizer, names, split, ServingFormSpec(candidates=("onnx-int8-token",)),
        tmp_path / "built", max_length=16, exact_ms=1e-6, timings=built,
        exported=folders["onnx-fp32"],
    )  # fmt: skip
    assert len(spent) == 1 and built["export_s"] >= spent[0] > 0
    # Its first batch (64 of the sample's texts) was already far slower: timing stopped there.
    assert slow.reasons[0].startswith("not faster than the exact model on 64 texts")
    assert len(forms.speed_sample(list(range(1000)))) == forms.SPEED_SAMPLE
    slower = forms.decide_serving_form([slow], SPEC, 0.97, 1e-6)
    assert slower.chosen == EXACT and "not faster than the exact model" in slower.note
    assert slower.tags()["serving_form.onnx-fp32"].startswith("fail: not faster")
    assert "| onnx-fp32 | - | - | - |" in forms.to_markdown(slower)

    # The form carries the version's preprocessing and applies it first, as the exact does.
    steps = Preprocessing(lowercase=True, redact=("email",))
    carried = OnnxClassifier(
        forms.export_merged(model, tokenizer, names, 16, tmp_path / "pre", steps.to_dict())
    )
    raw = ["Mail Bob at bob@example.com, a GOOD film", "a bad plot"]
    assert steps.apply(raw)[0] != raw[0] and carried.preprocess is not None
    assert carried.predict_proba(raw).tolist() == fp32.predict_proba(steps.apply(raw)).tolist()
    assert carried.predict(raw) == fp32.predict(steps.apply(raw))

    # Recorded on a registered version: tags, decision.json and the chosen form's files.
    mlc = client(home.tracking_uri)
    version = register_version(mlc, NAME, adapter)
    run_id = mlc.get_model_version(NAME, version).run_id
    passing = [forms.judge_form("onnx-fp32", exact, exact, labels, 0.5, SPEC)]
    decision = forms.decide_serving_form(passing, SPEC, 0.97)
    record_id = forms.record_serving_form(mlc, NAME, version, decision, folders["onnx-fp32"])
    tags = mlc.get_model_version(NAME, version).tags
    assert (tags["serving_form"], tags["serving_form.passed"]) == ("onnx-fp32", "true")
    assert tags["serving_form.record"] == record_id
    (found,) = history(mlc, NAME, version, kind="serving-form")  # one record of the history
    assert (found.run_id, found.outcome, found.train_run_id) == (record_id, "onnx-fp32", run_id)
    assert "agreement 1.0000 >= 0.99" in found.reason
    assert mlc.get_run(record_id).data.metrics["onnx-fp32.agreement"] == 1.0
    record = mlflow.artifacts.load_dict(f"runs:/{record_id}/serving_form/decision.json")
    assert record["chosen"] == "onnx-fp32" and record["forms"][0]["agreement"] == 1.0
    assert {a.path for a in mlc.list_artifacts(record_id, "serving_form/onnx-fp32")} >= {
        "serving_form/onnx-fp32/model.onnx"
    }
    served = load_version(NAME, version)
    assert served.form == "onnx-fp32"
    assert [r[0] for r in served(texts)] == [names[i] for i in exact]


def test_the_service_serves_the_form_that_passed_and_says_which(home, trained, tmp_path):
    adapter, texts, labels = trained
    mlc = client(home.tracking_uri)
    optimised = register_version(mlc, NAME, adapter)
    exact_only = register_version(mlc, NAME, adapter)  # registered as before: no form
    model, tokenizer, names = load_classifier(adapter, home.hf_hub_cache)
    exact = predict_proba(model, tokenizer, texts, batch_size=16).argmax(1).tolist()
    _, folders = forms.measure_forms(
        model, tokenizer, names, forms.EvalSplit(texts, labels, exact),
        ServingFormSpec(candidates=("onnx-fp32",)), tmp_path / "forms", max_length=16,
    )  # fmt: skip
    passing = [forms.judge_form("onnx-fp32", exact, exact, labels, 0.5, SPEC)]
    decision = forms.decide_serving_form(passing, SPEC, 0.97)
    forms.record_serving_form(mlc, NAME, optimised, decision, folders["onnx-fp32"])
    mlc.set_registered_model_alias(NAME, "champion", optimised)
    mlc.set_registered_model_alias(NAME, "challenger", exact_only)
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        state = wait_ready(server.url, 60, until=lambda s: s.get("challenger") == exact_only)
        assert state["forms"] == {"champion": "onnx-fp32", "challenger": "exact"}
        body = http.post("/predict", json={"texts": texts[:8], "key": "k"}).json()
        assert body["version"] == optimised
        assert [p["label"] for p in body["predictions"]] == [names[i] for i in exact[:8]]
        url = server.url
        assert total(url, "loraflow_model_loaded", version=optimised, form="onnx-fp32") == 1
        assert total(url, "loraflow_model_loaded", version=exact_only, form="exact") == 1
    assert json.dumps(state["forms"])  # plain JSON for the readiness probe


def test_an_onnx_served_version_feeds_the_window_the_exact_forms_lengths_and_oov(
    home, trained, tmp_path
):
    """The ONNX form counts tokens and OOV words as the exact form does (the same vocabulary,
    registered with the version); only the embedding sketch is missing, and says so."""
    from tasks.core.config.loader import load_monitoring_policy
    from tasks.core.monitoring.drift import embedding_shift
    from tasks.core.monitoring.features import vocabulary
    from tasks.core.monitoring.profile import Stats

    adapter, texts, labels = trained
    profile = tmp_path / "reference_profile.json"
    profile.write_text(json.dumps({"vocabulary": sorted(vocabulary(texts[:20]))}))
    mlc = client(home.tracking_uri)
    extra = {"reference_profile": str(profile)}
    optimised = register_version(mlc, NAME, adapter, artifacts=extra)
    exact_only = register_version(mlc, NAME, adapter, artifacts=extra)
    model, tokenizer, names = load_classifier(adapter, home.hf_hub_cache)
    exact = predict_proba(model, tokenizer, texts, batch_size=16).argmax(1).tolist()
    _, folders = forms.measure_forms(
        model, tokenizer, names, forms.EvalSplit(texts, labels, exact),
        ServingFormSpec(candidates=("onnx-fp32",)), tmp_path / "forms", max_length=16,
    )  # fmt: skip
    passing = [forms.judge_form("onnx-fp32", exact, exact, labels, 0.5, SPEC)]
    decision = forms.decide_serving_form(passing, SPEC, 0.97)
    forms.record_serving_form(mlc, NAME, optimised, decision, folders["onnx-fp32"])
    # Unseen words, and a text longer than the form's 16 tokens (counted in full, as exact).
    served = texts[20:26] + ["a zorblax quintessentially flibbertigibbet film " * 4]
    exact_form = load_version(NAME, exact_only)
    reference = [r[2] for r in exact_form(served)]
    assert exact_form.form == EXACT and all(f.sketch for f in reference)
    assert max(f.tokens for f in reference) > 16 and sum(f.oov for f in reference) > 0

    mlc.set_registered_model_alias(NAME, "champion", optimised)
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        state = wait_ready(server.url, 60, until=lambda s: s.get("champion") == optimised)
        assert state["forms"]["champion"] == "onnx-fp32"
        assert http.post("/predict", json={"texts": served, "key": "k"}).json()["version"] == (
            optimised
        )
        stats = http.get("/monitoring/window").json()["versions"][optimised]["stats"]
    assert stats["tokens"] == [f.tokens for f in reference]
    assert stats["words"] == sum(f.words for f in reference)
    assert stats["oov"] == sum(f.oov for f in reference) < stats["words"]
    assert stats["sketches"] == []  # the graph outputs logits only
    live = Stats.from_dict(stats)
    skipped = embedding_shift(live, live, load_monitoring_policy(POLICY))
    assert skipped.verdict == "skip" and "ONNX" in skipped.detail


def test_a_passing_form_slower_than_the_exact_model_is_not_served():
    # Found by bench_serving: on a CPU with native bf16 the exact model (bf16 autocast, 3.2
    # ms/example) outran the gated onnx-fp32 form (6.4 ms/example), which was served anyway.
    slow = figures("onnx-fp32", flipped=0)  # passes its gate, 1.0 ms/example
    decision = forms.decide_serving_form([slow], SPEC, 0.9, 0.5, "2026.11-1")
    assert (decision.chosen, decision.passed) == (EXACT, False)
    assert decision.note.startswith("onnx-fp32 passed its gate but is slower than the exact")
    assert served_form(decision.tags()) == EXACT
    assert decision.forms == (slow,)  # its figures stay on record
    fast = forms.decide_serving_form([slow], SPEC, 0.9, 3.0)
    assert fast.chosen == "onnx-fp32"
    unknown = forms.decide_serving_form([slow], SPEC, 0.9)  # exact speed not measured
    assert unknown.chosen == "onnx-fp32"


class Paced:
    """A form whose every batch takes ``ms`` per text on its own clock (no sleeping, no load)."""

    def __init__(self, ms: float):
        self.ms, self.batches, self.now = ms, [], 0.0

    def predict_proba(self, texts, batch_size):
        self.batches.append(len(texts))
        self.now += self.ms * len(texts) / 1000

    def clock(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("form_ms", "exact_ms", "timed_on"),
    [
        (2.0, 1.0, 64),  # twice the exact model's time on the first batch: stops there
        (1.2, 1.0, 128),  # slower, not clearly: the whole sample decides
        (0.5, 1.0, 128),  # faster: the whole sample
        (2.0, None, 128),  # nothing to compare with: the whole sample
    ],
)
def test_a_form_clearly_slower_on_its_first_batch_is_not_timed_further(form_ms, exact_ms, timed_on):
    form = Paced(form_ms)
    ms, texts = forms.time_form(form, [f"text {i}" for i in range(128)], 64, exact_ms, form.clock)
    assert texts == timed_on and form.batches[0] == 8  # the warm-up
    assert sum(form.batches[1:]) == timed_on
    assert ms == pytest.approx(form_ms)
