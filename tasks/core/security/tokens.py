"""Bearer tokens of the inference service: which endpoints need which token, checked in
constant time.

``/feedback`` (labels that decide a canary's online accuracy) and every administrative
endpoint need the feedback token; ``/predict`` needs the predict token when one is set (the
feedback token is accepted there too). ``/healthz``, ``/readyz`` and ``/metrics`` stay open:
probes and Prometheus read them, and they carry no input and no text (a documented choice:
bind the service to a private network or put it behind a proxy to hide them). Tokens come
from the environment (``LORAFLOW_FEEDBACK_TOKEN``, ``LORAFLOW_PREDICT_TOKEN``) or from files
named by ``..._FILE`` (Docker and Kubernetes secrets), never from a command line.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import BadInput

FEEDBACK_ENV = "LORAFLOW_FEEDBACK_TOKEN"
PREDICT_ENV = "LORAFLOW_PREDICT_TOKEN"
FEEDBACK, PREDICT = "feedback", "predict"


def _read(name: str, env: Mapping[str, str]) -> str:
    path = env.get(f"{name}_FILE", "")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise BadInput(f"{name}_FILE={path}: cannot read it ({exc.strerror})") from None
    return env.get(name, "").strip()


@dataclass(frozen=True)
class ServiceTokens:
    feedback: str = ""
    predict: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceTokens:
        env = os.environ if environ is None else environ
        return cls(_read(FEEDBACK_ENV, env), _read(PREDICT_ENV, env))

    def required(self, scope: str) -> tuple[str, ...]:
        """The tokens that open ``scope`` (empty: the scope is open)."""
        if scope == PREDICT:
            return tuple(t for t in (self.predict, self.feedback) if t) if self.predict else ()
        return (self.feedback,) if self.feedback else ()

    def open_scopes(self) -> list[str]:
        return [s for s in (PREDICT, FEEDBACK) if not self.required(s)]

    def describe(self) -> str:
        """One line on what needs a token (printed by ``loraflow serve``)."""
        if not self.feedback:
            return (
                "none: /predict and /feedback are open to whoever reaches this address "
                f"(embedded mode, loopback only; set {FEEDBACK_ENV} to require a token)"
            )
        closed = [f"/{s}" for s in (PREDICT, FEEDBACK) if s not in self.open_scopes()]
        opened = "" if self.predict else f"; /predict open (set {PREDICT_ENV} to close it)"
        return f"bearer token required for {', '.join(closed)}{opened}; probes and /metrics open"


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header ('' when there is none)."""
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def allowed(presented: str, accepted: tuple[str, ...]) -> bool:
    """Constant-time comparison against each accepted token (an open scope allows anyone)."""
    if not accepted:
        return True
    given = presented.encode()
    return any(hmac.compare_digest(given, token.encode()) for token in accepted) and bool(given)
