"""``POST /generate``: a registered generator answers prompts, batched, within stated limits.

Requests go through the model's micro-batcher like /predict (prompts from concurrent requests
are left-padded and decoded together, grouped by token budget); the queue is bounded
(``serving.max_queue``: beyond it a 503 says so), and a prompt longer than
``serving.max_text_chars`` or a ``max_new_tokens`` above ``serving.max_new_tokens`` (or the
version's pinned budget) is refused with 422 and a reason before anything is queued. Each
version counts its output tokens and generation time (tokens/s = their rates). Prompts routed
to a challenger are answered by the champion too (shadow): exact agreement of the two answers
and their ROUGE-L (the evaluation's own per-example function) feed the canary's agreement
figure, judged by exact match or by mean ROUGE-L as the canary policy says.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks.core.config.canary import ServingSpec
from tasks.core.errors import RequestRejected, ServiceNotReady
from tasks.core.serving.schemas import read_body


def parse_generate(body: bytes, spec: ServingSpec) -> tuple[list[str], int | None, str | None]:
    """(prompts, max_new_tokens or None, routing key) of a /generate body; 4xx with a reason."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"prompt", "prompts", "max_new_tokens", "key"}:
        raise RequestRejected(
            422, "invalid_body", "send {'prompt': str} or {'prompts': [str]}, optionally "
            "'max_new_tokens' and 'key'"
        )  # fmt: skip
    prompts = [data["prompt"]] if "prompt" in data else data.get("prompts") or []
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise RequestRejected(422, "empty_prompt", "every prompt must be a non-empty string")
    if len(prompts) > spec.max_texts:
        raise RequestRejected(422, "too_many_prompts", f"{len(prompts)}; at most {spec.max_texts}")
    for i, prompt in enumerate(prompts):
        if len(prompt) > spec.max_text_chars:
            raise RequestRejected(
                422, "prompt_too_long",
                f"prompt {i} has {len(prompt)} characters; at most {spec.max_text_chars}",
            )  # fmt: skip
    budget = data.get("max_new_tokens")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise RequestRejected(422, "max_new_tokens", "max_new_tokens must be an integer >= 1")
        if budget > spec.max_new_tokens:
            raise RequestRejected(
                422, "max_new_tokens",
                f"max_new_tokens {budget} is above this service's limit {spec.max_new_tokens}",
            )  # fmt: skip
    key = data.get("key")
    return prompts, budget, str(key) if key is not None else None


def generator_predict(python_model):
    """A batcher predict function over ``(prompt, budget)`` items of a ``LoraGeneratorModel``:
    one ``generate_batch`` per distinct budget; answers are ``(text, output_tokens)``."""
    from tasks.core.data.chat import served_turns
    from tasks.core.training.generation import generate_batch

    pinned = python_model.generation
    recorded = getattr(python_model, "preprocessing", None)
    preprocess = recorded.apply if recorded is not None else None

    def predict(items: list) -> list[tuple[str, float]]:
        asked = [(item, None) if isinstance(item, str) else item for item in items]
        out: list[tuple[str, float] | None] = [None] * len(asked)
        for budget in {b or pinned.max_new_tokens for _, b in asked}:
            idx = [i for i, (_, b) in enumerate(asked) if (b or pinned.max_new_tokens) == budget]
            spec = pinned.model_copy(update={"max_new_tokens": budget})
            turns = [served_turns(asked[i][0], python_model.system_prompt, preprocess) for i in idx]
            answers = generate_batch(python_model.model, python_model.tokenizer, turns, spec)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = (answer.text, float(answer.output_tokens))
        return out

    predict.generator = True
    predict.max_new_tokens = pinned.max_new_tokens
    predict.labels = ()
    return predict


def count_outcome(metrics, version: str, answer: str, outcome) -> bool:
    """An outcome of ``/feedback`` for ``version``'s ``answer``: a class label or a rating is
    right or wrong; a reference answer is right on exact match (the evaluation's normalised
    comparison) and adds its ROUGE-L F1 to the version's online ROUGE-L."""
    if outcome.rating is not None:
        correct = outcome.rating == "good"
    elif outcome.reference is not None:
        from tasks.core.evaluation.generation import per_example_rouge
        from tasks.core.evaluation.metrics.exact_match import _normalise

        correct = _normalise(answer, False) == _normalise(outcome.reference, False)
        (rouge,) = per_example_rouge([answer], [outcome.reference])
        metrics.feedback_rouge_l.labels(version).observe(rouge)
    else:
        correct = answer == outcome.label
    metrics.feedback.labels(version, "true" if correct else "false").inc()
    return correct


def count_answers(metrics, version: str, seconds: float, results) -> None:
    """A request's figures; answers are not streamed, so the first token reaches the client
    with the whole answer: time to first token is the request's latency."""
    metrics.latency.labels(version).observe(seconds)
    metrics.first_token_seconds.labels(version).observe(seconds)
    metrics.output_tokens.labels(version).inc(sum(t for _, t in results))
    metrics.generation_seconds.labels(version).inc(seconds)


def log_answers(predictions, version: str, results) -> list[str]:
    """Ids of the answers, kept in the log /feedback scores outcomes against."""
    request_id = uuid.uuid4().hex
    ids = [f"{request_id}-{i}" for i in range(len(results))]
    for pid, (text, _) in zip(ids, results, strict=True):
        predictions.add(pid, version, text, generated=True)
    return ids


def add_generate(
    app: FastAPI, holder, spec: ServingSpec, metrics, predictions, dependencies=()
) -> None:
    """Mount ``POST /generate`` on the service of ``holder``; ``predictions``: the log
    ``/feedback`` scores outcomes against; ``dependencies``: the bearer-token guard of
    /predict."""
    waiting = {"n": 0}
    shadows: set[asyncio.Task] = set()

    @app.post("/generate", dependencies=list(dependencies))
    async def generate(request: Request) -> JSONResponse:
        """Body ``{"prompt": str}`` or ``{"prompts": [...]}``, optional ``max_new_tokens`` and
        ``key``; answers each prompt with the routed version's pinned decoding settings."""
        prompts, budget, key = parse_generate(await read_body(request, spec.max_body_bytes), spec)
        if waiting["n"] >= spec.max_queue:
            raise RequestRejected(503, "queue_full", f"{spec.max_queue} requests already wait")
        try:
            model, role = holder.pick(key or request.headers.get("x-request-key") or "")
        except ServiceNotReady as exc:
            raise RequestRejected(503, "not_ready", str(exc)) from None
        try:
            pinned = getattr(model, "max_new_tokens", None)
            if not getattr(model, "generator", False):
                raise RequestRejected(
                    422, "not_a_generator", f"v{model.version} classifies: use /predict"
                )
            if budget is not None and pinned is not None and budget > pinned:
                raise RequestRejected(
                    422, "max_new_tokens",
                    f"max_new_tokens {budget} is above v{model.version}'s pinned {pinned}",
                )  # fmt: skip
            version, started = model.version, time.perf_counter()
            metrics.requests.labels(version).inc()
            waiting["n"] += 1
            try:
                results = await asyncio.wait_for(
                    model.batcher.submit([(p, budget) for p in prompts]), spec.request_timeout_s
                )
            except TimeoutError:
                metrics.errors.labels(version).inc()
                return JSONResponse({"error": f"v{version} timed out"}, status_code=504)
            except Exception as exc:
                metrics.errors.labels(version).inc()
                return JSONResponse({"error": f"v{version} failed: {exc}"}, status_code=500)
            finally:
                waiting["n"] -= 1
        finally:
            holder.release(model)
        count_answers(metrics, version, time.perf_counter() - started, results)
        ids = log_answers(predictions, version, results)
        answers = [
            {"id": pid, "output": text, "output_tokens": int(t)}
            for pid, (text, t) in zip(ids, results, strict=True)
        ]
        if role == "challenger" and spec.shadow_champion:
            outputs = [t for t, _ in results]
            task = asyncio.get_running_loop().create_task(
                shadow(holder, spec, metrics, prompts, budget, version, outputs, predictions, ids)
            )
            shadows.add(task)
            task.add_done_callback(shadows.discard)
        return JSONResponse({"version": version, "role": role, "answers": answers})


async def shadow(
    holder, spec: ServingSpec, metrics, prompts, budget, version, outputs, predictions, ids
) -> None:
    """The champion answers the challenger's prompts too: exact match of the two answers in
    the series the canary analysis judges, and their ROUGE-L F1 summed beside it."""
    from tasks.core.evaluation.generation import per_example_rouge

    champion = holder.pick_champion()
    if champion is None or champion.version == version or not champion.generator:
        if champion is not None:
            holder.release(champion)
        return
    try:
        theirs = await asyncio.wait_for(
            champion.batcher.submit([(p, budget) for p in prompts]), spec.request_timeout_s
        )
    except Exception:  # a shadow failure never touches the answered request
        return
    finally:
        holder.release(champion)
    others = [other for other, _ in theirs]
    rouges = per_example_rouge(outputs, others)
    for pid, mine, other, rouge in zip(ids, outputs, others, rouges, strict=True):
        agree = "true" if mine.strip() == other.strip() else "false"
        metrics.agreement.labels(version, champion.version, agree).inc()
        metrics.shadow_rouge_l.labels(version, champion.version).inc(rouge)
        predictions.add_shadow(pid, champion.version, other)
