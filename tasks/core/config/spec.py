"""The base of every config model, in a module of its own so schema modules can share it.

``tasks.core.config.experiment`` holds the experiment schema; the evaluate-and-gate sections live in
``tasks.core.config.evaluation``. Both derive from ``Spec`` and neither imports the other's module
at class-creation time, so either can be imported first.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Base of every config model: immutable, and unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
