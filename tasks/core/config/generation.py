"""Schema of generation: how a causal LM answers (evaluation, registered model, service),
and how its answers are judged (format check, refusal phrases, golden prompts).

One ``GenerationSpec`` is pinned at evaluation and registered with the model, so the served
generator answers with the same token budget, temperature and stop sequences it was gated on.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from tasks.core.config.spec import Spec

REFUSALS = ("i can't", "i cannot", "i'm sorry", "i am sorry", "as an ai", "i'm unable")


class GenerationSpec(Spec):
    max_new_tokens: int = Field(
        32, ge=1, le=4096, description="Token budget of every answer (evaluation and serving)."
    )
    temperature: float = Field(
        0.0, ge=0, le=2, description="0: greedy decoding (reproducible); > 0: sampling."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (temperature > 0 only).")
    stop: tuple[str, ...] = Field(
        (), description="Stop sequences: an answer is cut before the first one it contains."
    )
    seed: int = Field(0, description="Seed of sampling (temperature > 0).")


class FormatSpec(Spec):
    """What a well-formed answer looks like; its share is the figure ``format_valid``."""

    kind: Literal["none", "json", "json_schema", "regex"] = Field(
        "none",
        description="none: no format check; json: the answer parses as JSON; json_schema: it "
        "parses and matches `schema`; regex: it fully matches `pattern`.",
    )
    json_schema: dict | None = Field(
        None, description="json_schema: the JSON Schema answers must match (inline mapping)."
    )
    pattern: str | None = Field(None, description="regex: a Python regex the whole answer matches.")

    @model_validator(mode="after")
    def _complete(self) -> FormatSpec:
        if self.kind == "json_schema" and not self.json_schema:
            raise ValueError("kind json_schema needs `json_schema`")
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("kind regex needs `pattern`")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regex: {exc}") from None
        return self
