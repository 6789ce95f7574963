"""The CLI's quiet console (issue 14): stage decisions one line each, Prefect's echo of a
failure dropped (the error line says it), the run summary lists every gate, scoring shows
progress on a terminal."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from flows.cli import output
from tasks.common import STAGE_ATTR


def record(message: str, level: int = logging.INFO, stage: str | None = None, exc=None):
    rec = logging.LogRecord("prefect.task_runs", level, __file__, 1, message, (), exc)
    if stage:
        setattr(rec, STAGE_ATTR, stage)
    return rec


def shown(monkeypatch, *records) -> str:
    buffer = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buffer, width=80, soft_wrap=True))
    handler = output.StageConsole()
    for rec in records:
        handler.emit(rec)
    return buffer.getvalue()


def test_stage_lines_show_their_first_line_and_failure_echoes_are_dropped(monkeypatch):
    try:
        raise ValueError("canary rolled back version 2 at step 1")
    except ValueError as exc:
        failed = (type(exc), exc, exc.__traceback__)
    text = shown(
        monkeypatch,
        record("gates: fail (1 fail)\nmin_accuracy 0.5 >= 0.8: fail", logging.WARNING, "gates"),
        record("Finished in state Failed('Task run encountered an exception')", logging.ERROR),
        record(
            "Encountered exception during execution: CanaryRolledBack", logging.ERROR, exc=failed
        ),
        record("Beginning flow run 'x' for flow 'finetune'"),
        record("a retry will start in 2 s\nsecond line", logging.WARNING),
    )
    assert text.splitlines() == ["  gates: fail (1 fail)", "warning: a retry will start in 2 s"]
    assert "Traceback" not in text


def test_the_run_summary_lists_every_gate_with_figure_and_threshold():
    from tasks.core.evaluation.gates import GateDecision, GateResult, gate_lines

    decision = GateDecision(
        False,
        (
            GateResult("min_accuracy", "accuracy", 0.8312, 0.8, "pass"),
            GateResult("max_ece", "ece", 0.12, 0.1, "fail", "<="),
            GateResult("non_inferiority_accuracy", "accuracy", 0.83, None, "skip"),
        ),
    )
    assert gate_lines(decision) == [
        "min_accuracy 0.8312 >= 0.8: pass",
        "max_ece 0.1200 <= 0.1: fail",
        "non_inferiority_accuracy 0.8300: skip",
    ]


def test_scoring_reports_progress_per_model_on_a_terminal(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.core.evaluation.progress import ScoringProgress
    from tasks.core.evaluation.scoring import Classifier

    calls = []
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model.path), num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model.path))
    classifier = Classifier(
        model.eval(), tokenizer, ["a", "b"], "test", on_progress=lambda *a: calls.append(a)
    )
    probs, _ = classifier.predict(["a good film"] * 10, 4, 16)
    assert probs.shape == (10, 2)
    assert calls == [("candidate", 4, 10), ("candidate", 8, 10), ("candidate", 10, 10)]

    buffer = io.StringIO()
    bar = ScoringProgress(Console(file=buffer, force_terminal=True, width=80))
    bar("candidate", 5, 10)
    bar("base", 10, 10)
    bar.close()
    assert "evaluate candidate" in buffer.getvalue() and "evaluate base" in buffer.getvalue()
    silent = io.StringIO()
    ScoringProgress(Console(file=silent, force_terminal=False))("candidate", 5, 10)
    assert silent.getvalue() == ""
