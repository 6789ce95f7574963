"""What one evaluation measured: plain records the gates decide on and the audit trail keeps.

Kept apart from ``evaluation`` (which loads models) so the gate decision and its tests need
nothing heavier than these dataclasses.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

Role = Literal["candidate", "champion", "base"]


@dataclass(frozen=True)
class ModelScores:
    """One model's figures on the run's eval split."""

    role: Role
    source: str  # MLflow run id, models:/NAME/VERSION, or repo@revision
    metrics: dict[str, float]


@dataclass(frozen=True)
class SliceFigure:
    """The candidate's figure on one slice of the eval split."""

    slice: str
    bucket: str
    metric: str
    examples: int
    figure: float

    @property
    def key(self) -> str:
        """``length_lt10``: safe as an MLflow metric or tag name (no '<', '>', '=', '[')."""
        bucket = self.bucket.replace(">=", "ge").replace("<", "lt")
        return f"{self.slice}_{re.sub(r'[^A-Za-z0-9_.-]', '_', bucket)}"


@dataclass(frozen=True)
class GoldenCase:
    """A must-pass example: the candidate's output, and the champion's when there is one."""

    line: int  # 1-based line of the JSONL file
    text: str
    expected: str
    new_label: str
    new_score: float
    old_label: str | None = None
    old_score: float | None = None
    # Generative cases judge the answer themselves (exact answer or required substrings).
    ok: bool | None = None

    @property
    def passed(self) -> bool:
        return self.ok if self.ok is not None else self.new_label == self.expected

    @property
    def changed(self) -> bool:
        return self.old_label is not None and self.old_label != self.new_label


@dataclass(frozen=True)
class EvalReport:
    labels: tuple[str, ...]
    candidate: ModelScores
    champion: ModelScores | None = None
    champion_version: str | None = None
    # Why there is no champion comparison ("no champion yet", labels differ, ...).
    champion_note: str = ""
    base: ModelScores | None = None
    slices: tuple[SliceFigure, ...] = field(default_factory=tuple)
    golden: tuple[GoldenCase, ...] = field(default_factory=tuple)
    confusion: tuple[tuple[int, ...], ...] = field(default_factory=tuple)
    # The candidate's predicted class id per eval example (what its serving form must agree
    # with); kept out of the report file.
    predictions: tuple[int, ...] = field(default_factory=tuple, repr=False)
    # causal-lm: the candidate's worst answers (prompt, reference, output, rouge_l).
    examples: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def generative(self) -> bool:
        return not self.labels

    def golden_changes(self) -> list[GoldenCase]:
        return [case for case in self.golden if case.changed]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("predictions")
        data["golden"] = [
            asdict(c) | {"passed": c.passed, "changed": c.changed} for c in self.golden
        ]
        return data
