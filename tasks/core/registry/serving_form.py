"""The optimised serving form of a registered version: built, gated on agreement, recorded.

The exact model is the base + LoRA adapter as evaluated. Its serving form merges the LoRA
into the base (no adapter matmuls at inference), exports the merged classifier to ONNX and
runs it in ONNX Runtime, either in fp32 (``onnx-fp32``), with int8 weights and an int8 range
per token (``onnx-int8-token``, ``token_int8``) or with int8 weights from ONNX Runtime's
dynamic quantization, per output channel (``onnx-int8``, one range per batch). Against an
fp32 PyTorch model they run 2-6x faster (docs/benchmarks.md), and int8 gives up some
agreement; on a CPU with a native bf16 unit the exact model runs in bf16 (``precision:
auto``) and the fp32 form was measured 2x *slower* than it, so a form must also beat the
exact model's speed.

A form is served only when it passes its gate (``gates.serving_form`` of the gate policy):
on the *whole* eval split it predicts the exact model's label on at least ``min_agreement``
of the examples and loses at most ``max_accuracy_drop`` accuracy. The candidates are tried
in the configured order (fastest first); the first that passes and is faster than the exact
model is chosen, none such leaves the exact model served. ``decide_serving_form`` is the pure decision over the
measured figures; ``record_serving_form`` records it as one ``serving-form`` record of the
decision history (``serving_form/decision.json`` and the chosen form's files under
``serving_form/<form>/`` in that record's run), indexed by the version's tags.
The form carries the version's preprocessing (``preprocessing.json``) and applies it first.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.config.evaluation import ServingFormSpec
from tasks.core.registry.token_int8 import quantize_per_token
from tasks.core.serving.runtime import (
    ARTIFACT_ROOT,
    EXACT,
    FORM_TAG,
    LABELS_FILE,
    MODEL_FILE,
    PASSED_TAG,
    PREPROCESSING_FILE,
    RECORD_TAG,
    OnnxClassifier,
)

DECISION_ARTIFACT = f"{ARTIFACT_ROOT}/decision.json"
ONNX_OPSET = 17


@dataclass(frozen=True)
class FormFigures:
    """One candidate form measured against the exact model on the whole eval split."""

    form: str
    examples: int
    agreement: float  # share of examples with the exact model's label
    accuracy: float
    accuracy_delta: float  # form - exact, in accuracy (negative: the form is worse)
    ms_per_example: float  # scoring the eval split in batches, this machine
    passed: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServingFormDecision:
    """Which form a version is served in, and every figure and threshold behind it."""

    chosen: str  # a form name, or "exact"
    passed: bool  # an optimised form passed its gate
    min_agreement: float
    max_accuracy_drop: float
    exact_accuracy: float | None
    exact_ms_per_example: float | None
    forms: tuple[FormFigures, ...] = field(default_factory=tuple)
    policy_version: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"decision": "pass" if self.passed else "exact"}

    def tags(self) -> dict[str, str]:
        """The version's tags: the served form, whether it passed, its figures."""
        tags = {FORM_TAG: self.chosen, PASSED_TAG: str(self.passed).lower()}
        for figures in self.forms:
            if not figures.examples:  # not scored on the split: why not
                tags[f"{FORM_TAG}.{figures.form}"] = "fail: " + "; ".join(figures.reasons)
                continue
            tags[f"{FORM_TAG}.{figures.form}"] = (
                f"{'pass' if figures.passed else 'fail'}: agreement {figures.agreement:.4f} "
                f">= {self.min_agreement}, accuracy delta {100 * figures.accuracy_delta:+.2f} "
                f"points >= -{100 * self.max_accuracy_drop:g}, "
                f"{figures.ms_per_example:.2f} ms/example"
            )
        if self.note:
            tags[f"{FORM_TAG}.note"] = self.note[:500]
        return tags


def judge_form(
    form: str,
    predictions: list[int],
    exact: list[int],
    references: list[int],
    seconds: float,
    spec: ServingFormSpec,
) -> FormFigures:
    """A form's figures against the exact model's predictions, and its gate."""
    n = len(references)
    got, want, truth = np.asarray(predictions), np.asarray(exact), np.asarray(references)
    agreement = float((got == want).mean()) if n else 0.0
    accuracy = float((got == truth).mean()) if n else 0.0
    delta = accuracy - (float((want == truth).mean()) if n else 0.0)
    reasons = []
    if agreement < spec.min_agreement:
        reasons.append(f"agreement {agreement:.4f} < {spec.min_agreement}")
    if delta < -spec.max_accuracy_drop - 1e-12:
        reasons.append(f"accuracy delta {delta:+.4f} < -{spec.max_accuracy_drop}")
    if not n:
        reasons.append("no eval examples")
    return FormFigures(
        form, n, agreement, accuracy, delta, 1000 * seconds / max(n, 1), not reasons, tuple(reasons)
    )


def decide_serving_form(
    figures: list[FormFigures],
    spec: ServingFormSpec,
    exact_accuracy: float | None,
    exact_ms_per_example: float | None = None,
    policy_version: str = "",
    note: str = "",
) -> ServingFormDecision:
    """The first candidate (in the configured order) that passed and scores faster than the
    exact model (``exact_ms_per_example``, the evaluation's figure on the same split; unknown:
    not compared) is served; else the exact. A form is optimised only if it is: on a CPU with
    a native bf16 unit the exact model runs in bf16 and can outpace ONNX Runtime's fp32."""
    order = {form: i for i, form in enumerate(spec.candidates)}
    ranked = sorted(figures, key=lambda f: order.get(f.form, len(order)))
    passed = [f for f in ranked if f.passed]
    faster = [f for f in passed if exact_ms_per_example is None
              or f.ms_per_example < exact_ms_per_example]  # fmt: skip
    chosen = faster[0].form if faster else EXACT
    if chosen == EXACT and not note:
        note = "no optimised form passed its gate" if figures else "no optimised form built"
        reasons = [f"{f.form} {'; '.join(f.reasons)}" for f in ranked if f.reasons]
        if figures and not any(f.examples for f in figures):  # none was fast enough to judge
            note = "no optimised form is faster than the exact model"
        if reasons:
            note += ": " + "; ".join(reasons)
        if passed:
            note = (
                f"{passed[0].form} passed its gate but is slower than the exact model "
                f"({passed[0].ms_per_example:.2f} vs {exact_ms_per_example:.2f} ms/example on "
                "the eval split): the exact model is served"
            )
    return ServingFormDecision(
        chosen=chosen,
        passed=chosen != EXACT,
        min_agreement=spec.min_agreement,
        max_accuracy_drop=spec.max_accuracy_drop,
        exact_accuracy=exact_accuracy,
        exact_ms_per_example=exact_ms_per_example,
        forms=tuple(ranked),
        policy_version=policy_version,
        note=note,
    )


# -- building the forms (PyTorch -> ONNX -> ONNX Runtime) ----------------------------------


def export_merged(
    model, tokenizer, labels: list[str], max_length: int, folder: Path,
    preprocessing: dict | None = None,
) -> Path:  # fmt: skip
    """The PEFT classifier with its LoRA merged into the base, as ONNX fp32, with tokenizer
    and the version's preprocessing (applied to every text first, as the exact model does)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    merged = model  # already merged (the evaluation's classifier): timed as it is
    if hasattr(model, "merge_and_unload"):  # a PEFT model: merged on a copy, it keeps its adapter
        merged = copy.deepcopy(model).merge_and_unload()
    merged = merged.float().eval()
    sample = tokenizer(["a short example", "and a second, longer example text"], padding=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    args = tuple(torch.tensor(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with torch.inference_mode():
        torch.onnx.export(
            merged, args, str(folder / MODEL_FILE), input_names=names,
            output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False,
        )  # fmt: skip
    tokenizer.save_pretrained(str(folder))
    meta = {"labels": list(labels), "max_length": max_length}
    (folder / LABELS_FILE).write_text(json.dumps(meta))
    if preprocessing:
        (folder / PREPROCESSING_FILE).write_text(json.dumps(preprocessing))
    return folder


def quantize_int8(fp32: Path, folder: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization of every MatMul's weights, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(fp32, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MODEL_FILE))
    quantize_dynamic(
        str(fp32 / MODEL_FILE), str(folder / MODEL_FILE),
        weight_type=QuantType.QInt8, per_channel=True,
    )  # fmt: skip
    return folder


def build_form(form: str, fp32: Path, work: Path) -> Path:
    """The folder of ``form`` (``onnx-fp32`` is the export itself)."""
    if form == "onnx-fp32":
        return fp32
    if form == "onnx-int8":
        return quantize_int8(fp32, work / form)
    if form == "onnx-int8-token":
        return quantize_per_token(fp32, work / form)
    raise ValueError(f"unknown serving form {form!r}")


@dataclass(frozen=True)
class EvalSplit:
    """The eval split and what the exact model predicted on it (its evaluation)."""

    texts: list[str]
    references: list[int]
    exact: list[int]
    exact_ms_per_example: float | None = None


def exact_ms_per_example(
    model, tokenizer, texts: list[str], batch_size: int, max_length: int, dtype=None,
    preprocessing: dict | None = None, threads: int = 1,
) -> float:  # fmt: skip
    """The exact model as the service runs it (LoRA merged, at the evaluation's precision
    ``dtype``, ``threads`` intra-op threads like a predict thread) scoring ``texts`` in
    batches, ms per example: the speed a form must beat, measured like the forms' and just
    before them (the evaluation's latency figure is of the unmerged model, on every core,
    taken at another moment of a shared machine; with 2 OpenMP threads on 2 loaded cores the
    exact model took 22 ms/example, with 1 thread 4.1)."""
    import torch

    from tasks.core.data.preprocess import Preprocessing
    from tasks.core.training.modeling import predict_proba

    merged = model  # already merged (the evaluation's classifier): timed as it is
    if hasattr(model, "merge_and_unload"):  # a PEFT model: merged on a copy, it keeps its adapter
        merged = copy.deepcopy(model).merge_and_unload()
    if preprocessing:
        texts = Preprocessing.from_dict(preprocessing).apply(list(texts))
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        predict_proba(merged.eval(), tokenizer, list(texts), batch_size, max_length, dtype)
        return 1000 * (time.perf_counter() - started) / max(len(texts), 1)
    finally:
        torch.set_num_threads(before)


SPEED_SAMPLE = 128  # texts, spread over the split: the speed the exact model and forms run at


def speed_sample(texts: list[str], size: int = SPEED_SAMPLE) -> list[str]:
    """At most ``size`` texts spread evenly over the split (deterministic): each form and the
    exact model are timed on the same ones, as a predict thread runs them."""
    if len(texts) <= size:
        return list(texts)
    return [texts[i] for i in np.linspace(0, len(texts) - 1, size).round().astype(int)]


CLEARLY_SLOWER = 1.25  # a first batch this much slower than the exact model ends the timing


def time_form(form, sample: list[str], batch_size: int, exact_ms: float | None, clock=None):
    """(ms per example, texts timed) of ``form`` on ``sample``, in batches as it is served.
    A first batch already ``CLEARLY_SLOWER`` than the exact model ends it there (the form
    cannot be served; measured on the quickstart: ~0.5 s of each first run's evaluation)."""
    clock = clock or time.perf_counter
    form.predict_proba(sample[:8], batch_size)  # warm-up: first-run allocations
    first = sample[:batch_size]
    started = clock()
    form.predict_proba(first, batch_size)
    elapsed = clock() - started
    ms = 1000 * elapsed / max(len(first), 1)
    if len(first) == len(sample) or (exact_ms is not None and ms >= CLEARLY_SLOWER * exact_ms):
        return ms, len(first)
    started = clock()
    form.predict_proba(sample[len(first) :], batch_size)
    elapsed += clock() - started
    return 1000 * elapsed / len(sample), len(sample)


def measure_forms(
    model, tokenizer, labels: list[str], split: EvalSplit, spec: ServingFormSpec,
    work: Path, max_length: int, batch_size: int = 64, threads: int = 1,
    preprocessing: dict | None = None, exact_ms: float | None = None,
    timings: dict[str, float] | None = None, exported: Path | None = None,
) -> tuple[list[FormFigures], dict[str, Path]]:  # fmt: skip
    """Export, then judge the candidates in order until one passes (later ones are not built).

    Each form is timed first on ``speed_sample`` (``time_form``) with ``threads`` ONNX
    Runtime intra-op threads (1: as a predict thread of the service runs it, and as
    ``exact_ms_per_example`` times the exact model). One not faster than ``exact_ms`` could not be served: its
    agreement is not measured (seconds saved). Otherwise it scores the whole eval split on
    every core for its agreement and accuracy delta. ``model`` (the exact PEFT classifier) is
    merged on a copy; ``preprocessing`` (the version's, as a dict) travels in the form, which
    applies it to the split's raw texts as the exact did. ``timings`` receives ``export_s``:
    the seconds spent building (the export, and each form's rewrite or quantization).
    ``exported``: that export, already made (``export_merged`` of the same model, elsewhere).
    """
    started = time.perf_counter()
    fp32 = exported
    if fp32 is None or not (fp32 / MODEL_FILE).is_file():
        fp32 = export_merged(
            model, tokenizer, labels, max_length, work / "onnx-fp32", preprocessing
        )
    if timings is not None:
        timings["export_s"] = time.perf_counter() - started
    sample = speed_sample(split.texts)
    figures, folders = [], {}
    for form in spec.candidates:
        built = time.perf_counter()
        folder = build_form(form, fp32, work)
        if timings is not None:  # building (not scoring) is the pipeline's overhead too
            timings["export_s"] += time.perf_counter() - built
        folders[form] = folder
        ms, timed_on = time_form(OnnxClassifier(folder, threads), sample, batch_size, exact_ms)
        if exact_ms is not None and ms >= exact_ms:
            why = (
                f"not faster than the exact model on {timed_on} texts "
                f"({ms:.2f} vs {exact_ms:.2f} ms/example): agreement not measured"
            )
            figures.append(FormFigures(form, 0, 0.0, 0.0, 0.0, ms, False, (why,)))
            continue
        probs = OnnxClassifier(folder, 0).predict_proba(split.texts, batch_size)
        seconds = ms * len(split.texts) / 1000  # the sample's speed, as served
        result = judge_form(
            form, probs.argmax(1).tolist(), split.exact, split.references, seconds, spec
        )
        figures.append(result)
        if result.passed:
            break
    return figures, folders


# -- recording ------------------------------------------------------------------------------


def record_serving_form(
    mlc, name: str, version: str, decision: ServingFormDecision,
    folder: Path | None, record_key: str = "",
) -> str:  # fmt: skip
    """The serving-form decision as its own record of the decision history (kind
    ``serving-form``: figures, thresholds, ``decision.json``, the chosen form's files under
    ``serving_form/<form>/``); the version's tags index it (the form, whether it passed, its
    figures, ``serving_form.record``: the run the service loads the form from). Its run id.
    """
    from tasks.core.registry.history import actor_pipeline, append_about_version

    figures = {"min_agreement": decision.min_agreement}
    if decision.exact_ms_per_example is not None:  # the speed a form had to beat
        figures["exact.ms_per_example"] = decision.exact_ms_per_example
    for f in decision.forms:
        figures[f"{f.form}.ms_per_example"] = f.ms_per_example
        if f.examples:  # scored on the split (a form not faster than the exact one is not)
            figures |= {
                f"{f.form}.agreement": f.agreement,
                f"{f.form}.accuracy_delta": f.accuracy_delta,
            }
    chosen = next((f for f in decision.forms if f.form == decision.chosen), None)
    reason = decision.note or (
        f"agreement {chosen.agreement:.4f} >= {decision.min_agreement}, accuracy delta "
        f"{100 * chosen.accuracy_delta:+.2f} points on {chosen.examples} eval texts"
        if chosen is not None
        else "exact model"
    )
    files = None
    if decision.passed and folder is not None:
        files = {f"{ARTIFACT_ROOT}/{decision.chosen}": folder}
    record_id = append_about_version(
        mlc, name, str(version), artifacts={DECISION_ARTIFACT: decision.to_dict()}, files=files,
        kind="serving-form", outcome=decision.chosen, reason=reason, actor=actor_pipeline(),
        figures=figures, details=decision.to_dict(), key=record_key,
    )  # fmt: skip
    for tag, value in (decision.tags() | {RECORD_TAG: record_id}).items():
        mlc.set_model_version_tag(name, version, tag, value)
    return record_id


def to_markdown(decision: ServingFormDecision) -> str:
    rows = [
        f"## Serving form: `{decision.chosen}`",
        "",
        f"Gate: agreement with the exact model >= {decision.min_agreement}, accuracy delta >= "
        f"-{100 * decision.max_accuracy_drop:g} points, on the whole eval split. "
        + (decision.note or ""),
        "",
        "| form | agreement | accuracy | delta (points) | ms/example | gate |",
        "|---|---:|---:|---:|---:|---|",
    ]
    if decision.exact_accuracy is not None:
        ms = decision.exact_ms_per_example
        rows.append(
            f"| exact | 1.0000 | {decision.exact_accuracy:.4f} | 0.00 | "
            f"{'-' if ms is None else f'{ms:.2f}'} | reference |"
        )
    for f in decision.forms:
        verdict = "pass" if f.passed else "fail: " + "; ".join(f.reasons)
        if not f.examples:  # not scored on the split: it could not be served anyway
            rows.append(f"| {f.form} | - | - | - | {f.ms_per_example:.2f} | {verdict} |")
            continue
        rows.append(
            f"| {f.form} | {f.agreement:.4f} | {f.accuracy:.4f} | {100 * f.accuracy_delta:+.2f} "
            f"| {f.ms_per_example:.2f} | {verdict} |"
        )
    return "\n".join(rows)
