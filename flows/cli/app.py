"""The ``loraflow`` application: the command groups, and the exit code of every error.

The state home's environment is applied before Prefect, MLflow or huggingface_hub is imported
(they read their settings at import time), which is why the heavy imports sit inside commands.
Exit codes come from the error's class (``tasks/core/errors.py``): 0 done, 1 unexpected error,
2 bad input (config, data, model reference, argument), 3 refused by a policy stage (license
denied, gate failed, canary rolled back).
"""

from __future__ import annotations

import sys

import typer

from flows.cli import deploy, hub, inspect, pipeline, security, serving, stack
from flows.cli.output import error_line
from tasks.core.errors import LoraflowError, StackError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="loraflow: discover, audit, validate, fine-tune (LoRA), gate, register and promote.",
)
for group in (pipeline, hub, inspect, serving, stack, deploy, security):
    group.register(app)


def main() -> None:
    try:
        app()
    except LoraflowError as exc:
        error_line(str(exc))
        if isinstance(exc, StackError) and exc.log:
            sys.stderr.write(stack.log_tail(exc.log) + "\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
