"""Replay held-out examples through the live HTTP endpoint, so a canary has traffic to judge.

The examples are the challenger's own eval split (its training run's prepared dataset), sent
as real requests on loopback with a distinct routing key each, so the service splits them by
its canary weight exactly as it would split users. Every run is bounded by a request count
and a wall-clock time; it stops earlier once the caller says it has enough. Known labels go
back through ``/feedback`` so online accuracy has data too. A generative eval split (prompt
turns and a reference response) is replayed through ``/generate`` instead, its references
posted as ``/feedback`` outcomes (exact match and ROUGE-L online).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tasks.core.config.canary import ReplaySpec
from tasks.core.security.tokens import ServiceTokens

FEEDBACK_CHUNK = 64
EVAL_SPLITS = ("eval", "validation", "test")


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    failed: int
    seconds: float
    by_version: dict[str, int] = field(default_factory=dict)
    feedback: int = 0
    errors: tuple[str, ...] = ()  # the first few failure messages


def last_user_turn(messages: str | list) -> str:
    """The prompt /generate is sent for a prepared row's prompt turns: its last user turn
    (a one-turn prompt exactly; earlier turns of a multi-turn prompt are not replayed)."""
    from tasks.core.data.chat import parse_prompt

    return [t["content"] for t in parse_prompt(messages) if t["role"] == "user"][-1]


def replay_endpoint(path: str | Path) -> str:
    """``/generate`` for a prepared generative dataset (a ``response`` column), else
    ``/predict``."""
    path = Path(path)
    if not path.is_dir():
        return "/predict"
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    split = next((s for s in EVAL_SPLITS if s in data), None)
    return "/generate" if split and "response" in data[split].column_names else "/predict"


def load_examples(path: str | Path, limit: int) -> list[tuple[str, str]]:
    """(text, class name) pairs from a prepared dataset folder (its eval split) or a JSONL
    file of ``{"text": ..., "label": CLASS_NAME}`` lines; the first ``limit``. A generative
    eval split gives (last user turn, reference response) pairs."""
    path = Path(path)
    if path.is_dir():
        from datasets import load_from_disk

        data = load_from_disk(str(path))
        split = next((s for s in EVAL_SPLITS if s in data), None)
        if split is None:
            raise ValueError(f"{path}: no eval split (looked for {', '.join(EVAL_SPLITS)})")
        table = data[split].select(range(min(limit, len(data[split]))))
        if "response" in table.column_names:
            columns = table[:]
            prompts = [last_user_turn(m) for m in columns["messages"]]
            return list(zip(prompts, columns["response"], strict=True))
        names = table.features["label"].names
        return [(t, names[y]) for t, y in zip(table["text"], table["label"], strict=True)]
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
                    raise ValueError(f"{path}:{number}: needs string 'text' and 'label'")
                rows.append((row["text"], row["label"]))
            if len(rows) >= limit:
                break
    return rows


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def replay(
    url: str,
    examples: list[tuple[str, str]],
    spec: ReplaySpec,
    enough: Callable[[dict[str, int]], bool] = lambda counts: False,
    key_prefix: str = "replay",
    endpoint: str = "/predict",
) -> ReplayResult:
    """Send examples in turn (``spec.concurrency`` at once) to ``endpoint`` until
    ``enough(requests per version)``, ``spec.max_requests`` or ``spec.max_seconds``; then
    post their labels (``/generate``: their reference answers)."""
    generate = endpoint == "/generate"
    if not examples:
        raise ValueError("no examples to replay")
    lock = threading.Lock()
    state = {"next": 0, "failed": 0}
    counts: Counter[str] = Counter()
    outcomes: list[dict] = []
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + spec.max_seconds
    tokens = ServiceTokens.from_env()  # the caller's, as the service it talks to expects
    predict_auth = _auth(tokens.predict or tokens.feedback)

    def take() -> int | None:
        with lock:
            i = state["next"]
            if i >= spec.max_requests or time.monotonic() > deadline or enough(dict(counts)):
                return None
            state["next"] = i + 1
            return i

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60, headers=predict_auth) as http:
            while (i := take()) is not None:
                text, label = examples[i % len(examples)]
                try:
                    field = "prompt" if generate else "text"
                    response = http.post(endpoint, json={field: text, "key": f"{key_prefix}-{i}"})
                    ok = response.status_code == 200
                    body = response.json() if ok else {}
                    failure = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, body, failure = False, {}, f"{type(exc).__name__}: {exc}"
                with lock:
                    if ok:
                        counts[body["version"]] += 1
                        if generate:
                            pid = body["answers"][0]["id"]
                            outcomes.append({"id": pid, "reference": label})
                        else:
                            outcomes.append({"id": body["predictions"][0]["id"], "label": label})
                    else:
                        state["failed"] += 1
                        if len(errors) < 5:
                            errors.append(failure)

    with ThreadPoolExecutor(spec.concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(spec.concurrency)]:
            future.result()
    feedback = 0
    if spec.post_feedback and outcomes:
        with httpx.Client(base_url=url, timeout=60, headers=_auth(tokens.feedback)) as http:
            for start in range(0, len(outcomes), FEEDBACK_CHUNK):
                chunk = outcomes[start : start + FEEDBACK_CHUNK]
                response = http.post("/feedback", json={"items": chunk})
                if response.status_code == 200:
                    feedback += response.json()["accepted"]
    return ReplayResult(
        sent=state["next"],
        failed=state["failed"],
        seconds=round(time.monotonic() - started, 3),
        by_version=dict(counts),
        feedback=feedback,
        errors=tuple(errors),
    )
