"""One error hierarchy: the class of an error decides its exit code and whether to retry."""

from __future__ import annotations

import pickle

import pytest

from tasks.common import retry_when_it_can_help
from tasks.core import errors
from tasks.core.errors import exit_code_of, is_retryable


@pytest.mark.parametrize(
    ("error", "exit_code", "retryable"),
    [
        (errors.ConfigError("base.yaml: train.epochs: ..."), 2, False),
        (errors.MetricUnavailable("eval.metrics: bleu"), 2, False),
        (errors.DataError("train.tsv: row 3 ..."), 2, False),
        (errors.DataValidationFailed("leakage", report={"checks": []}), 2, False),
        (errors.CatalogError("model x is not in the mirror"), 2, False),
        (errors.MirrorError("not a folder"), 2, False),
        (errors.DiscoveryError("nothing matches"), 2, False),
        (errors.TrainingInputError("split is empty"), 2, False),
        (errors.LineageError("no alias champion"), 2, False),
        (errors.NothingToPromote("no challenger"), 2, False),
        (errors.RollbackImpossible("nothing to restore"), 2, False),
        (errors.PortInUse("8080 is taken"), 2, False),
        (errors.RequestRejected(422, "empty_text", "text is empty"), 2, False),
        (errors.LicenseDenied("gpl-3.0 denied"), 3, False),
        (errors.GateFailed("accuracy 0.7 < 0.8"), 3, False),
        (errors.CanaryRolledBack("error rate 5% > 1%"), 3, False),
        (errors.Preempted(12, "/ckpt/step-12"), 1, True),
        (errors.TrainingProcessFailed("killed by signal 9"), 1, True),
        (errors.TrainingStageFailed("deployment ended Crashed"), 1, True),
        (errors.ServiceNotReady("no champion"), 1, True),
        (errors.BatcherClosed("retired"), 1, True),
        (errors.StackError("mlflow exited", code=2), 2, False),
        (OSError("connection reset"), 1, True),  # anything else: I/O, worth a retry
        (KeyError("bug"), 1, True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_exit_code_and_retry_come_from_the_class(error, exit_code, retryable):
    assert exit_code_of(error) == exit_code
    assert is_retryable(error) is retryable


class _State:
    def __init__(self, error):
        self.error = error

    def result(self):
        raise self.error


@pytest.mark.parametrize(
    ("error", "retry"),
    [(errors.GateFailed("no"), False), (errors.ConfigError("bad"), False),
     (errors.Preempted(3, None), True), (TimeoutError("slow"), True)],
)  # fmt: skip
def test_prefect_retries_exactly_what_can_change(error, retry):
    assert retry_when_it_can_help(None, None, _State(error)) is retry


def test_errors_survive_pickling_as_prefect_stores_them():
    failed = pickle.loads(pickle.dumps(errors.DataValidationFailed("bad", report={"n": 1})))
    assert failed.report == {"n": 1} and str(failed) == "bad"
    preempted = pickle.loads(pickle.dumps(errors.Preempted(7, "ckpt")))
    assert (preempted.step, preempted.checkpoint) == (7, "ckpt")


def test_bad_input_is_still_a_value_error():
    """Callers that caught ValueError before the hierarchy existed still catch bad input."""
    assert issubclass(errors.BadInput, ValueError)
    assert issubclass(errors.Transient, RuntimeError)
