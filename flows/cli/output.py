"""What every command prints with: the consoles, the one error line, and the quiet mode.

Errors reach the user as one line, ``error: <what and where>``, on stderr, followed by at most
one ``details:`` line that points at the records (Prefect flow run, MLflow run); ``main`` in
``app.py`` turns every ``LoraflowError`` into those lines and its class's exit code, so
commands raise errors instead of printing them. Unless ``--verbose`` is given, third-party
warnings, download bars and Prefect's console log are kept off the terminal: the stage
decisions are shown one line each, warnings as one ``warning:`` line, and the failure that
the error line reports is not echoed again with a traceback. The Prefect run logs (the UI)
keep everything.
"""

from __future__ import annotations

import logging
import os
import warnings

from rich.console import Console
from rich.text import Text

from tasks.common import STAGE_ATTR

# soft_wrap: a long line stays one line (the terminal wraps it), so captured output and
# `grep` see whole lines; tables still fit the width.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Prefect's own lines about a run that failed: the error line already says why.
FAILURE_ECHOES = (
    "Finished in state",
    "Encountered exception during execution",
    "Task run failed with exception",
    "Flow run failed",
)
QUIET_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
NOISY_LOGGERS = ("mlflow", "transformers", "datasets", "huggingface_hub", "peft", "alembic")
_state = {"verbose": False}


def error_line(message: str) -> None:
    """One line on stderr; the message is plain text (it may hold '[eval]', not markup)."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def warning_line(message: str) -> None:
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True)


def details_line(message: str) -> None:
    err.print(Text.assemble(("details:", "dim"), " ", message), soft_wrap=True, highlight=False)


def silence_warnings() -> None:
    """No warning reaches the terminal: filters alone are not enough, as libraries re-enable
    theirs inside ``warnings.catch_warnings()`` (MLflow shows UserWarnings "once")."""
    warnings.simplefilter("ignore")
    warnings.showwarning = lambda *args, **kwargs: None


def verbose() -> bool:
    return _state["verbose"]


def quiet(verbose: bool = False) -> None:
    """Called first: progress bars off, and (unless verbose) library warnings off here and in
    child processes (the training processes inherit the environment)."""
    _state["verbose"] = verbose
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if verbose:
        return
    os.environ["PYTHONWARNINGS"] = "ignore"
    os.environ["LORAFLOW_QUIET"] = "1"  # the training processes silence warnings too
    silence_warnings()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class StageConsole(logging.Handler):
    """Prefect's console, shortened: stage decisions and warnings, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break the run
            return
        if getattr(record, STAGE_ATTR, None):
            style = "yellow" if record.levelno >= logging.WARNING else "dim"
            first = message.splitlines()[0] if message else ""
            err.print(Text(f"  {first}", style=style), soft_wrap=True, highlight=False)
        elif record.levelno >= logging.WARNING and not message.startswith(FAILURE_ECHOES):
            warning_line(message.splitlines()[0] if message else record.name)


def tame_prefect_console() -> None:
    """Replace Prefect's console handler by ``StageConsole`` (not with ``--verbose``).

    Prefect sets up logging when it is imported; call this after importing a flow.
    """
    if verbose():
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, PrefectConsoleHandler):
            root.removeHandler(handler)
    if not any(isinstance(h, StageConsole) for h in root.handlers):
        root.addHandler(StageConsole())
    for name in NOISY_LOGGERS:  # Prefect's setup may have reset them
        logging.getLogger(name).setLevel(logging.ERROR)
