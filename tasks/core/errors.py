"""Every error loraflow raises on purpose, on one base that says what a caller needs.

``exit_code`` is what the CLI exits with (2 bad input, 3 policy refusal, 1 anything else) and
``retryable`` whether trying again can change the outcome: Prefect's retry condition and the
CLI's exit mapping both read the class, never a hand-kept list. ``str()`` of an instance is
the one line shown to the user. Modelled on ``huggingface_hub/errors.py``.
"""

from __future__ import annotations

from typing import Any

EXIT_FAILED = 1  # something broke (a crash, a server that did not start)
EXIT_BAD_INPUT = 2  # the config, a data file, a model reference or an argument is wrong
EXIT_REFUSED = 3  # a policy stage said no: license denied, gate failed, canary rolled back


class LoraflowError(Exception):
    """Base of every deliberate error; subclasses set ``exit_code`` and ``retryable``."""

    exit_code: int = EXIT_FAILED
    retryable: bool = False


# -- the three kinds --------------------------------------------------------------------------


class BadInput(LoraflowError, ValueError):
    """What the user gave cannot work as given; retrying the same input cannot help."""

    exit_code = EXIT_BAD_INPUT


class Refusal(LoraflowError):
    """A policy stage refused on purpose (the decision is recorded before this is raised)."""

    exit_code = EXIT_REFUSED


class Transient(LoraflowError, RuntimeError):
    """Work stopped before it finished for a reason a retry can overcome (it resumes)."""

    retryable = True


# -- bad input --------------------------------------------------------------------------------


class ConfigError(BadInput):
    """A config or policy file is missing, unreadable or invalid."""


class MetricUnavailable(ConfigError):
    """A configured metric is neither a project module nor loadable from the Hub."""


class DataError(BadInput):
    """The data cannot be used: a file, split, column, row or label is wrong."""


class DataValidationFailed(DataError):
    """A check at severity ``fail`` fired; ``report`` holds every check's result."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report

    def __reduce__(self):  # keep the report when Prefect pickles the exception
        return (type(self), (str(self), self.report))


class CatalogError(BadInput):
    """A model or revision cannot be found in the catalog."""


class MirrorError(BadInput):
    """The folder or repo id cannot be put into the local mirror."""


class DiscoveryError(BadInput):
    """No usable model: the pinned one is missing or unfit, or nothing matches."""


class TrainingInputError(BadInput):
    """The model, data or settings cannot be trained as configured."""


class LineageError(BadInput):
    """The registered model, alias or version does not exist."""


class NothingToPromote(BadInput):
    """No such version, or no challenger to promote."""


class RollbackImpossible(BadInput):
    """``loraflow rollback`` has nothing to restore."""


class PortInUse(BadInput):
    """The address a server should listen on is taken."""


class RequestRejected(BadInput):
    """The inference service refuses a request before any model sees it (an HTTP 4xx/503)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


# -- refusals ---------------------------------------------------------------------------------


class LicenseDenied(Refusal):
    """No candidate's license (or supply chain) is allowed by the policy."""


class GateFailed(Refusal):
    """The evaluation failed a registration gate; nothing was registered."""


class CanaryRolledBack(Refusal):
    """The challenger failed a canary check; ``str()`` names the check and its figures."""


class PromotionForbidden(Refusal):
    """The registry refused to move ``champion`` for this identity (not a promoter)."""


class CanaryEnded(Refusal):
    """Somebody ended the canary while it ran (``loraflow rollback``); already recorded."""


# -- transient --------------------------------------------------------------------------------


class Preempted(Transient):
    """SIGTERM arrived: a checkpoint of the current step was saved, then training stopped."""

    def __init__(self, step: int, checkpoint: Any):
        super().__init__(f"training stopped by SIGTERM after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint

    def __reduce__(self):
        return (type(self), (self.step, self.checkpoint))


class TrainingProcessFailed(Transient):
    """The training process ended without a result (crash, kill, preemption): a retry resumes."""


class TrainingStageFailed(Transient):
    """The training deployment on a work pool did not complete (its flow run says why)."""


class ServiceNotReady(Transient):
    """The inference service has no champion loaded (yet)."""


class BatcherClosed(Transient):
    """The model behind a batcher was retired; the request is routed again."""


# -- operations -------------------------------------------------------------------------------


class StackError(LoraflowError):
    """A process of the local stack did not come up; ``log`` is its log file."""

    def __init__(self, message: str, log: Any = None, code: int = EXIT_FAILED):
        super().__init__(message)
        self.log, self.exit_code = log, code


def exit_code_of(exc: BaseException) -> int:
    """The CLI's exit status for ``exc``: the class's, 1 for anything unexpected."""
    return exc.exit_code if isinstance(exc, LoraflowError) else EXIT_FAILED


def is_retryable(exc: BaseException) -> bool:
    """Whether a retry can help: loraflow's errors say so; anything else is I/O, worth a retry."""
    return exc.retryable if isinstance(exc, LoraflowError) else True
