"""Deterministic refusals: retrying cannot change them, and the CLI maps them to exit codes."""

from __future__ import annotations

EXIT_BAD_INPUT = 2  # the config, a data file or a model reference is wrong
EXIT_REFUSED = 3  # a policy stage said no: license denied, gate failed


class Refusal(Exception):
    """A stage refused on purpose; ``str()`` is the one-line reason shown to the user."""

    exit_code = EXIT_REFUSED


class LicenseDenied(Refusal):
    pass


class GateFailed(Refusal):
    pass
