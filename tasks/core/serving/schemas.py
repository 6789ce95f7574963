"""Request bodies of the service and the limits they must keep.

Bodies are read and parsed here, not by FastAPI's automatic validation, so every refusal is
one JSON line ``{"error": ..., "reason": ...}`` with a 4xx status and a reason code that the
metrics count apart from model errors. Nothing is coerced: a number is not a text.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request

from tasks.core.config.canary import ServingSpec
from tasks.core.errors import RequestRejected

MAX_KEY_CHARS = 256


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PredictBody(_Body):
    text: str | None = Field(None, description="One text to classify.")
    texts: list[str] | None = Field(None, description="Several texts, answered in order.")
    key: str | None = Field(
        None,
        max_length=MAX_KEY_CHARS,
        description="Routing key (user, session): the same key always reaches the same model.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> PredictBody:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send exactly one of 'text' (a string) and 'texts' (a list)")
        return self

    @property
    def items(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class FeedbackItem(_Body):
    id: str = Field(description="Prediction id from a /predict or /generate answer.")
    label: str | None = Field(None, min_length=1, description="The true class of that text.")
    rating: Literal["good", "bad"] | None = Field(
        None, description="A generated answer judged as a whole (counts as right or wrong)."
    )
    reference: str | None = Field(
        None, description="The answer a generation should have given: scored by exact match "
        "and ROUGE-L, as evaluation scores it."
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_outcome(self) -> FeedbackItem:
        if sum(v is not None for v in (self.label, self.rating, self.reference)) != 1:
            raise ValueError("send exactly one of 'label', 'rating' (good/bad) and 'reference'")
        return self


class FeedbackBody(_Body):
    id: str | None = Field(None, description="One prediction id (with its outcome).")
    label: str | None = Field(None, description="Its true class (/predict).")
    rating: Literal["good", "bad"] | None = Field(None, description="Its rating (/generate).")
    reference: str | None = Field(None, description="Its reference answer (/generate).")
    items: list[FeedbackItem] | None = Field(None, description="Several outcomes at once.")

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackBody:
        given = [v for v in (self.label, self.rating, self.reference) if v is not None]
        single = self.id is not None or bool(given)
        if single == (self.items is not None) or (single and (not self.id or len(given) != 1)):
            raise ValueError(
                "send either 'id' with one of 'label', 'rating', 'reference', or "
                "'items': [{id, label|rating|reference}, ...]"
            )
        return self

    @property
    def outcomes(self) -> list[FeedbackItem]:
        if self.items is not None:
            return list(self.items)
        return [
            FeedbackItem(id=self.id, label=self.label, rating=self.rating, reference=self.reference)
        ]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (read on to a cap, so the client sees
    the answer rather than a reset connection)."""
    declared = request.headers.get("content-length")
    too_large = RequestRejected(413, "body_too_large", f"request body exceeds {limit} bytes")
    if declared and declared.isdigit() and int(declared) > 64 * limit:
        raise too_large
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 64 * limit:
            break
    if size > limit:
        raise too_large
    return b"".join(chunks)


def _parse(model: type[_Body], body: bytes):
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestRejected(
            422, "invalid_input", f"body must be a JSON object, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise RequestRejected(422, "invalid_input", "; ".join(parts)) from None


def parse_predict(body: bytes, spec: ServingSpec) -> PredictBody:
    request = _parse(PredictBody, body)
    texts = request.items
    if not texts:
        raise RequestRejected(422, "empty_text", "'texts' is empty: send at least one text")
    if len(texts) > spec.max_texts:
        raise RequestRejected(
            422, "too_many_texts", f"{len(texts)} texts; at most {spec.max_texts}"
        )
    for i, text in enumerate(texts):
        where = "text" if request.text is not None else f"texts[{i}]"
        if not text.strip():
            raise RequestRejected(422, "empty_text", f"{where} is empty or whitespace only")
        if len(text) > spec.max_text_chars:
            raise RequestRejected(
                422,
                "text_too_long",
                f"{where} has {len(text)} characters; at most {spec.max_text_chars}",
            )
    return request


def parse_feedback(body: bytes) -> FeedbackBody:
    request = _parse(FeedbackBody, body)
    if not request.outcomes:
        raise RequestRejected(422, "empty_batch", "'items' is empty: send at least one outcome")
    return request


def check_feedback_labels(
    outcomes: list[FeedbackItem], log: PredictionLog, labels: dict[str, tuple[str, ...]]
) -> None:
    """Refuse (422, nothing consumed) a label that is no class of the version that made the
    prediction (a typo would count as a wrong answer and skew the canary's online accuracy),
    and an outcome of the wrong kind: a label for a generation, a rating for a class."""
    problems, allowed = [], ()
    for outcome in outcomes:
        record = log.get(outcome.id)
        if record is None:
            continue
        if record["generated"] != (outcome.label is None):
            want = "'rating' or 'reference'" if record["generated"] else "'label'"
            problems.append(f"{outcome.id}: v{record['version']}'s answer takes {want}")
            continue
        classes = labels.get(record["version"], ())
        if outcome.label is not None and classes and outcome.label not in classes:
            problems.append(
                f"{outcome.id}: {outcome.label!r} is not a class of v{record['version']}"
            )
            allowed = classes
    if problems:
        hint = f"; allowed labels: {', '.join(allowed)}" if allowed else ""
        raise RequestRejected(422, "unknown_label", f"{'; '.join(problems[:5])}{hint}")


class PredictionLog:
    """Recent predictions by id, so labelled outcomes can be scored; bounded, oldest out."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._records: OrderedDict[str, dict] = OrderedDict()

    def add(self, pid: str, version: str, label: str, generated: bool = False) -> None:
        """``label``: the predicted class, or the generated answer when ``generated``."""
        record = {"version": version, "label": label, "shadow": None, "generated": generated}
        self._records[pid] = record
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def add_shadow(self, pid: str, version: str, label: str) -> None:
        record = self._records.get(pid)
        if record is not None:
            record["shadow"] = (version, label)

    def get(self, pid: str) -> dict | None:
        """The record, kept (a refused feedback must not use up its prediction)."""
        return self._records.get(pid)

    def pop(self, pid: str) -> dict | None:
        """The record, removed: each prediction is scored against one outcome only."""
        return self._records.pop(pid, None)
