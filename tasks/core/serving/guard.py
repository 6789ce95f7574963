"""Bearer-token checks of the service's endpoints, as FastAPI dependencies.

A request without the right token is refused with 401 before its body is read, so it never
reaches a model or the feedback accounting; the refusal is counted as
``loraflow_rejected_requests_total{reason="unauthorized"}``. Any administrative endpoint added to the
service takes ``require(tokens, FEEDBACK)`` too. Which tokens open what: ``security/tokens.py``.
"""

from __future__ import annotations

from fastapi import Depends, Request

from tasks.core.errors import RequestRejected
from tasks.core.security.tokens import ServiceTokens, allowed, bearer


def require(tokens: ServiceTokens, scope: str):
    """A dependency refusing requests to ``scope`` without an accepted bearer token."""
    accepted = tokens.required(scope)

    async def check(request: Request) -> None:
        if not allowed(bearer(request.headers.get("authorization")), accepted):
            raise RequestRejected(
                401,
                "unauthorized",
                f"{request.url.path} needs a bearer token (Authorization: Bearer <token>)",
            )

    return Depends(check)
