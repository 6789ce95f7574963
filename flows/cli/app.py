"""The ``loraflow`` application: the command groups, and the exit code of every error.

The state home's environment is applied before Prefect, MLflow or huggingface_hub is imported
(they read their settings at import time), which is why the heavy imports sit inside commands.
Exit codes come from the error's class (``tasks/core/errors.py``): 0 done, 1 unexpected error,
2 bad input (config, data, model reference, argument), 3 refused by a policy stage (license
denied, gate failed, canary rolled back). Every error is one ``error:`` line (and a
``details:`` line pointing at the run's records); ``--verbose`` adds the traceback and keeps
every library's own output.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from flows.cli import deploy, hub, inspect, monitor, pipeline, security, serving, stack
from flows.cli.output import details_line, error_line, quiet, verbose
from tasks.core.errors import EXIT_FAILED, LoraflowError, StackError

VERBOSE_FLAGS = ("--verbose", "-v")
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="loraflow: discover, audit, validate, fine-tune (LoRA), gate, register and promote.",
)
for group in (pipeline, hub, inspect, serving, monitor, stack, deploy, security):
    group.register(app)


@app.callback()
def options(
    verbose_flag: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show library warnings, Prefect's full log and tracebacks (anywhere on the "
            "command line).",
        ),
    ] = False,
) -> None:
    """Options of every command."""


def _report(exc: BaseException) -> int:
    """Print the error (one line, then where to look) and return the exit status."""
    if isinstance(exc, LoraflowError):
        error_line(str(exc))
        if isinstance(exc, StackError) and exc.log:
            sys.stderr.write(stack.log_tail(exc.log) + "\n")
        code = exc.exit_code
    else:
        error_line(f"unexpected {type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    hint = getattr(exc, "details", "")
    if verbose():
        traceback.print_exception(exc)
    elif code == EXIT_FAILED:
        hint = f"{hint}; " if hint else ""
        hint += "--verbose shows the traceback"
    if hint:
        details_line(hint)
    return code


def main() -> None:
    from tasks.core.ops.processes import skip_final_collections

    skip_final_collections()
    args = sys.argv[1:]
    wanted = any(a in VERBOSE_FLAGS for a in args)
    quiet(verbose=wanted)
    sys.argv[1:] = [a for a in args if a not in VERBOSE_FLAGS]
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        sys.exit(_report(exc))


if __name__ == "__main__":
    main()
