"""The FastAPI application: /predict, /feedback, /healthz, /readyz, /metrics, /monitoring/window.

/feedback (and any administrative endpoint) needs the feedback bearer token, /predict the
predict token when one is set (``guard.py``); the probes and /metrics stay open.

Routing, batching and swapping live in ``ModelHolder``; this module turns HTTP into calls on
it and keeps the accounting honest: refused input is counted by reason and never as a model
error, a model failure or timeout is a 5xx counted against the version that failed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tasks.core.config.canary import ServingSpec
from tasks.core.config.monitoring import LiveSpec
from tasks.core.errors import RequestRejected, ServiceNotReady
from tasks.core.monitoring.features import Features
from tasks.core.monitoring.window import LiveWindows
from tasks.core.security.tokens import FEEDBACK, PREDICT, ServiceTokens
from tasks.core.serving.generate import add_generate, count_outcome
from tasks.core.serving.guard import require
from tasks.core.serving.models import ModelHolder
from tasks.core.serving.schemas import (
    PredictionLog,
    check_feedback_labels,
    parse_feedback,
    parse_predict,
    read_body,
)
from tasks.core.serving.telemetry import ServiceMetrics


def split_features(results) -> tuple[list[tuple[str, float]], list[Features] | None]:
    """(label, score) pairs, and the monitoring features when every result carries them."""
    pairs = [(r[0], r[1]) for r in results]
    if results and all(len(r) > 2 for r in results):
        return pairs, [r[2] for r in results]
    return pairs, None


def create_app(
    holder: ModelHolder, tokens: ServiceTokens | None = None, live: LiveSpec | None = None
) -> FastAPI:
    """``tokens``: the bearer tokens /feedback and /predict need (default: from the env);
    ``live``: what the monitoring policy keeps of served inputs (default: features of the
    last 500 per version, no text)."""
    tokens = ServiceTokens.from_env() if tokens is None else tokens
    spec: ServingSpec = holder.spec
    metrics: ServiceMetrics = holder.metrics
    predictions = PredictionLog(spec.feedback_window)
    windows = LiveWindows(live or LiveSpec())
    shadows: set[asyncio.Task] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await holder.start()
        yield
        await holder.stop()

    app = FastAPI(
        title=f"loraflow: {holder.name}",
        description="Champion and challenger of one registered model, by sticky key.",
        lifespan=lifespan,
    )
    app.state.holder = holder

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        metrics.rejected.labels(exc.reason).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": exc.message, "reason": exc.reason}, status_code=exc.status, headers=headers
        )

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once a champion is loaded (readiness); the body shows what is served."""
        return JSONResponse(holder.state(), status_code=200 if holder.ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/monitoring/window", dependencies=[require(tokens, FEEDBACK)])
    async def monitoring_window() -> dict:
        """Each version's live window as statistics (and redacted samples only if the
        monitoring policy enables them): what `loraflow monitor` compares with the reference.
        Administrative: the feedback token, as /feedback."""
        return windows.snapshot()

    @app.post("/predict", dependencies=[require(tokens, PREDICT)])
    async def predict(request: Request) -> JSONResponse:
        """Body ``{"text": str}`` or ``{"texts": [str, ...]}``, optional ``"key"`` (or header
        ``X-Request-Key``) for sticky routing; answers a label and score per text."""
        body = parse_predict(await read_body(request, spec.max_body_bytes), spec)
        texts = body.items
        request_id = uuid.uuid4().hex
        key = body.key or request.headers.get("x-request-key") or request_id
        try:
            model, role = holder.pick(key)
        except ServiceNotReady as exc:
            raise RequestRejected(503, "not_ready", str(exc)) from None
        if model.generator:
            holder.release(model)
            raise RequestRejected(422, "generator", f"v{model.version} generates: use /generate")
        started = time.perf_counter()
        version = model.version
        metrics.requests.labels(version).inc()
        try:
            results = await asyncio.wait_for(model.batcher.submit(texts), spec.request_timeout_s)
        except TimeoutError:
            metrics.errors.labels(version).inc()
            return JSONResponse(
                {"error": f"model v{version} took longer than {spec.request_timeout_s} s"},
                status_code=504,
            )
        except Exception as exc:
            metrics.errors.labels(version).inc()
            return JSONResponse(
                {"error": f"model v{version} failed: {type(exc).__name__}: {exc}"},
                status_code=500,
            )
        finally:
            holder.release(model)
        metrics.latency.labels(version).observe(time.perf_counter() - started)
        results, feats = split_features(results)
        windows.add(version, holder.labels.get(version, ()), texts, results, feats)
        metrics.observe_inputs(version, results, feats)
        ids = [f"{request_id}-{i}" for i in range(len(texts))]
        for pid, (label, _) in zip(ids, results, strict=True):
            metrics.predictions.labels(version, label).inc()
            predictions.add(pid, version, label)
        if role == "challenger" and spec.shadow_champion:
            task = asyncio.get_running_loop().create_task(
                shadow(texts, ids, version, [label for label, _ in results])
            )
            shadows.add(task)
            task.add_done_callback(shadows.discard)
        return JSONResponse(
            {
                "model": holder.name,
                "version": version,
                "role": role,
                "predictions": [
                    {"id": pid, "label": label, "score": round(score, 6)}
                    for pid, (label, score) in zip(ids, results, strict=True)
                ],
            }
        )

    async def shadow(texts: list[str], ids: list[str], version: str, labels: list[str]) -> None:
        """Score challenger-routed texts with the champion too: agreement on the same inputs."""
        champion = holder.pick_champion()
        if champion is None or champion.version == version:
            if champion is not None:
                holder.release(champion)
            return
        try:
            results = await asyncio.wait_for(champion.batcher.submit(texts), spec.request_timeout_s)
        except Exception:  # a shadow failure never touches the answered request
            return
        finally:
            holder.release(champion)
        results = split_features(results)[0]
        for pid, mine, (theirs, _) in zip(ids, labels, results, strict=True):
            agree = "true" if mine == theirs else "false"
            metrics.agreement.labels(version, champion.version, agree).inc()
            predictions.add_shadow(pid, champion.version, theirs)

    @app.post("/feedback", dependencies=[require(tokens, FEEDBACK)])
    async def feedback(request: Request) -> JSONResponse:
        """Body ``{"id": ..., "label": ...}`` or ``{"items": [...]}``: the true class of earlier
        predictions, scored against the version that made each (and its shadow); for a
        generated answer a ``rating`` (good/bad, the served answer only) or a ``reference``
        answer instead. A label outside that version's classes, an outcome of the wrong kind
        or an empty batch is refused (422) and uses up nothing."""
        body = parse_feedback(await read_body(request, spec.max_body_bytes))
        check_feedback_labels(body.outcomes, predictions, holder.labels)
        accepted, unknown = 0, []
        for outcome in body.outcomes:
            record = predictions.pop(outcome.id)
            if record is None:
                unknown.append(outcome.id)
                continue
            accepted += 1
            correct = count_outcome(metrics, record["version"], record["label"], outcome)
            windows.outcome(record["version"], correct)
            if record["shadow"] is not None and outcome.rating is None:
                shadow_version, shadow_label = record["shadow"]
                count_outcome(metrics, shadow_version, shadow_label, outcome)
        if not accepted:
            raise RequestRejected(
                404, "unknown_id", f"no recent prediction with id {', '.join(unknown[:5])}"
            )
        return JSONResponse({"accepted": accepted, "unknown": unknown})

    add_generate(app, holder, spec, metrics, predictions, [require(tokens, PREDICT)])
    return app
