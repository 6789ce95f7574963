"""Who becomes champion: a pure decision; the registry I/O that applies it lives elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PromotionDecision:
    action: Literal["promote", "keep", "noop"]
    candidate: str
    champion: str | None
    reason: str


def decide(candidate: str, champion: str | None) -> PromotionDecision:
    """First passing version becomes champion; later ones wait for the canary."""
    if champion is None:
        return PromotionDecision(
            "promote",
            candidate,
            None,
            f"no champion yet: version {candidate} passed every gate and becomes champion",
        )
    if champion == candidate:
        return PromotionDecision(
            "noop", candidate, champion, f"version {candidate} is already champion"
        )
    return PromotionDecision(
        "keep",
        candidate,
        champion,
        f"champion stays at version {champion}; challenger {candidate} waits for the canary to decide",
    )
