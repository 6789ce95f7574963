"""Who becomes champion: a pure decision; the registry I/O that applies it lives elsewhere.

Without a champion the first version that passed every gate is promoted at once: there is
nothing to compare it with. With a champion the challenger has to earn the alias in a canary
(``tasks.core.promotion.canary``), or, where no canary policy is configured, waits for one started by
hand (``loraflow promote NAME``). A version a canary rolled back is not tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# "awaiting-promoter": the pipeline's identity may not move champion (an authenticated
# registry refused it); a promoter finishes the promotion with ``loraflow promote NAME``.
Action = Literal["promote", "keep", "noop", "canary", "rollback", "awaiting-promoter"]


@dataclass(frozen=True)
class PromotionDecision:
    action: Action
    candidate: str
    champion: str | None
    reason: str


def decide_promotion(
    candidate: str, champion: str | None, canary: bool = False, rolled_back: str = ""
) -> PromotionDecision:
    """``canary``: a canary policy applies; ``rolled_back``: why a canary rolled it back."""
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
    if rolled_back:
        return PromotionDecision(
            "noop",
            candidate,
            champion,
            f"version {candidate} was rolled back by a canary ({rolled_back}); "
            f"champion stays at version {champion}",
        )
    if canary:
        return PromotionDecision(
            "canary",
            candidate,
            champion,
            f"champion stays at version {champion} while challenger {candidate} runs the canary",
        )
    return PromotionDecision(
        "keep",
        candidate,
        champion,
        f"champion stays at version {champion}; challenger {candidate} waits for the canary to decide",
    )
