"""Stage 6b - serving form: the registered version's optimised form, gated on agreement.

Runs after registration: the exact model (base + adapter, as evaluated) is merged, exported
to ONNX Runtime and each candidate form is scored on the whole eval split against the exact
model's predictions of the evaluation (the form applies the run's preprocessing, as the exact
model does); the decision (figures, thresholds, chosen form) is a ``serving-form`` record of
the decision history, indexed by the version's tags (``tasks/core/registry/serving_form.py``). A form that
fails its gate is not served; the exact model is, as before. Never fails the pipeline for
the form's sake: an export error is recorded as the decision's note and the exact model serves.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.common import at_low_priority, stage_options
from tasks.core.config.evaluation import EvalSpec, GateSpec
from tasks.core.data.prepare import load_prepared
from tasks.core.data.preprocess import Preprocessing
from tasks.core.data.report import DataReport
from tasks.core.digests import key
from tasks.core.home import Home
from tasks.core.registry import serving_form as forms
from tasks.core.registry.versions import Registration
from tasks.core.tracking import client
from tasks.core.training.refs import CAUSAL_LM
from tasks.gate import EvalOutcome, eval_precision, fetch_adapter


@dataclass(frozen=True)
class ServingFormOutcome:
    chosen: str
    passed: bool
    compute_s: float  # scoring the forms on the eval split (the CLI's overhead figure)
    build_s: float  # merging, exporting, quantizing
    finished_at: float = 0.0  # epoch seconds: older than a pipeline run means cached


def _cache_key(context, params) -> str:
    return key(
        "serving-form",
        params["registration"],
        params["outcome"].run_id,
        params["outcome"].decision,
        getattr(params["outcome"], "preprocessing", None),
        params["gates"].serving_form,
        params["spec"],
        params["max_length"],
        params["home"].tracking_uri,
    )


def export_folder(home: Home, run_id: str, max_length: int, preprocessing: dict | None) -> Path:
    """Where the merged ONNX export of a training run waits for the serving-form stage."""
    return home.work_dir / "serving-forms" / key(run_id, max_length, preprocessing or {})[:16]


# Submitted by the flow after the evaluation, once training ran in it: the LoRA's merge and the
# ONNX export (~2.5 s of one core, on the critical path after the registration otherwise) run in
# a thread while the registration runs. Not during the evaluation: on 2 cores its scoring uses
# both, and the export beside it slowed it by as much as it saved (measured on the quickstart).
# The stage finds the folder and only times, scores and gates the form. Not cached: the
# folder is the cache. Never fails the flow: without a folder the stage exports itself and
# records any error.
@task(name="export-serving-form", task_run_name="export the serving form of run {run_id:.8}")
def export_early(
    run_id: str, adapter_artifact: str, data: DataReport, gates: GateSpec, task: str,
    max_length: int, home: Home,
) -> str | None:  # fmt: skip
    rule = gates.serving_form
    if not rule.enabled or not rule.candidates or task == CAUSAL_LM:
        return None  # no optimised form is wanted (a generator is served as evaluated)
    folder = export_folder(home, run_id, max_length, data.preprocessing)
    if not (folder / forms.MODEL_FILE).is_file():
        try:
            at_low_priority(_export, run_id, adapter_artifact, data, max_length, home, folder,
                            name="export-serving-form")  # fmt: skip
        except Exception:
            get_run_logger().warning("exporting the serving form early failed", exc_info=True)
            return None
    return str(folder)


def _export(run_id, adapter_artifact, data: DataReport, max_length, home: Home, folder: Path):
    """The exact model as the stage loads it, merged and exported into ``folder`` (whole or
    absent: written beside it, then renamed)."""
    from tasks.core.training.modeling import load_classifier

    adapter = fetch_adapter(home, run_id, adapter_artifact)
    model, tokenizer, labels = load_classifier(adapter, Path(home.hf_hub_cache), merge=True)
    building = folder.with_name(f"{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    forms.export_merged(model, tokenizer, list(labels), max_length, building, data.preprocessing)
    building.rename(folder)


@task(
    name="serving-form",
    task_run_name="serving form {registration.name} v{registration.version}",
    timeout_seconds=1800,
    cache_key_fn=_cache_key,
    **stage_options(),
)
def build_serving_form(
    registration: Registration,
    outcome: EvalOutcome,
    adapter_artifact: str,
    data: DataReport,
    spec: EvalSpec,
    gates: GateSpec,
    max_length: int,
    home: Home,
    exported: str | None = None,
) -> ServingFormOutcome:
    """``exported``: the merged ONNX export made while the registration ran, if one was."""
    rule, log = gates.serving_form, get_run_logger()
    version = outcome.decision.policy_version
    # One record per decision: a retry in this flow run finds it instead of writing another.
    record_key = key("serving-form", _cache_key(None, locals()), str(flow_run.get_id() or ""))
    skip = None
    if not rule.enabled or not rule.candidates:
        skip = "serving_form disabled by the gate policy"
    elif outcome.generation is not None:  # the optimised forms are classifiers' (ONNX logits)
        skip = "a generator is served as evaluated (optimised forms exist for classifiers)"
    if skip is not None:
        decision = forms.decide_serving_form([], rule, None, policy_version=version, note=skip)
        _record(registration, decision, None, home, record_key)
        return ServingFormOutcome(decision.chosen, False, 0.0, 0.0, time.time())
    adapter = fetch_adapter(home, outcome.run_id, adapter_artifact)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="serving-form-") as tmp:
        started = time.perf_counter()
        try:
            figures, folders, exact_ms = _measure(
                adapter, outcome, data, spec, rule, max_length, home, Path(tmp), timings, exported
            )
            note = ""
        except Exception as exc:  # an export the runtime cannot take: serve the exact model
            log.warning("building the serving form failed", exc_info=True)
            figures, folders, exact_ms = [], {}, outcome.metrics.get("latency_ms_per_example")
            note = f"building the optimised form failed: {type(exc).__name__}: {exc}"[:400]
        measured = time.perf_counter() - started
        exact_accuracy = outcome.metrics.get("accuracy")
        decision = forms.decide_serving_form(figures, rule, exact_accuracy, exact_ms, version, note)
        _record(registration, decision, folders.get(decision.chosen), home, record_key)
    if exported:  # recorded (its files are the record's artifacts): the work copy goes
        shutil.rmtree(exported, ignore_errors=True)
    # Evaluation compute: timing the exact model and the forms, scoring the split; the ONNX
    # export (building, not scoring) and the record are the pipeline's overhead.
    scored = max(measured - timings.get("export_s", 0.0), 0.0)
    log.info("serving form of %s v%s: %s", registration.name, registration.version,
             decision.chosen + (f" ({decision.note})" if decision.note else ""))  # fmt: skip
    return ServingFormOutcome(
        decision.chosen, decision.passed, scored, max(measured - scored, 0), time.time()
    )


def _measure(adapter, outcome, data, spec, rule, max_length, home, work, timings, exported):
    """(figures, folders) of the candidate forms, scored against the exact predictions, and
    the exact model's own speed as served, measured the same way just before them."""
    from tasks.core.evaluation.scoring import adapter_classifier

    precision = eval_precision(spec)
    recorded = getattr(outcome, "preprocessing", None) or None
    preprocessing = Preprocessing.from_dict(recorded) if recorded else None
    exact = adapter_classifier(
        adapter, outcome.run_id, home.hf_hub_cache, preprocessing, precision.dtype
    )
    eval_data = load_prepared(data.prepared_path)["eval"]
    texts, references = list(eval_data["text"]), list(eval_data["label"])
    # An evaluation cached before reports kept predictions has none: score the exact model.
    predictions = list(getattr(outcome.report, "predictions", None) or ())
    if len(predictions) != len(texts):
        probs, _ = exact.predict(texts, spec.batch_size, max_length)
        predictions = probs.argmax(1).tolist()
    split = forms.EvalSplit(texts, references, predictions)
    exact_ms = forms.exact_ms_per_example(
        exact.model, exact.tokenizer, forms.speed_sample(texts), spec.batch_size, max_length,
        precision.dtype, recorded,
    )  # fmt: skip
    figures, folders = forms.measure_forms(
        exact.model, exact.tokenizer, list(exact.labels), split, rule, work, max_length,
        spec.batch_size, preprocessing=recorded, exact_ms=exact_ms, timings=timings,
        exported=Path(exported) if exported else None,
    )  # fmt: skip
    return figures, folders, exact_ms


def _record(registration: Registration, decision, folder, home: Home, record_key: str) -> None:
    mlc = client(home.tracking_uri)
    forms.record_serving_form(
        mlc, registration.name, registration.version, decision, folder,
        record_key=record_key,
    )  # fmt: skip
    create_markdown_artifact(
        key="serving-form",
        markdown=forms.to_markdown(decision),
        description=f"Serving form of {registration.name} v{registration.version}",
    )
