"""Conversations for supervised fine-tuning: rows to chat turns, and turns to model text.

Every generative row becomes one conversation: optional system turn, then user/assistant
turns, ending with the assistant's answer (the response the loss and the evaluation look at).
A prompt/response row is the two-turn case. The rendering is the tokenizer's own chat
template at the pinned revision (``apply_chat_template``), so training, evaluation and serving
see the same text; its sha256 is recorded, since a changed template is a changed training.
Without a template, a plain ``role: content`` layout is used (and recorded as such).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from tasks.core.errors import DataError

ROLES = ("system", "user", "assistant")
PLAIN_LAYOUT = "loraflow-plain-v1"  # recorded in place of a template sha when there is none


@dataclass(frozen=True)
class Conversation:
    """The turns before the answer, and the answer."""

    prompt: tuple[dict, ...]  # {"role", "content"} turns, ending with a user turn
    response: str

    @property
    def user_text(self) -> str:
        """The last user turn: what reports, leakage and slices look at."""
        return next(t["content"] for t in reversed(self.prompt) if t["role"] == "user")

    def prompt_json(self) -> str:
        return json.dumps(list(self.prompt), ensure_ascii=False)


class ConversationError(DataError):
    """A row that is no usable conversation (the message names what is wrong)."""


def _turns(value) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConversationError(f"messages is not a JSON list of turns ({exc.msg})") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not value:
        raise ConversationError("messages is not a non-empty list of {role, content} turns")
    return list(value)


def from_messages(value, system: str | None = None) -> Conversation:
    """A chat column's value (list of turns, or its JSON) as a conversation; checks roles."""
    turns = []
    for i, turn in enumerate(_turns(value), start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ConversationError(f"turn {i} is not a {{role, content}} mapping")
        role, content = str(turn["role"]), turn["content"]
        if role not in ROLES:
            raise ConversationError(
                f"turn {i} has role {role!r}; allowed: {', '.join(ROLES)} (the chat template's)"
            )
        turns.append({"role": role, "content": "" if content is None else str(content)})
    if turns[-1]["role"] != "assistant":
        raise ConversationError("no assistant turn at the end: nothing to learn or compare")
    if not any(t["role"] == "user" for t in turns[:-1]):
        raise ConversationError("no user turn before the assistant's answer")
    if system and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    return Conversation(tuple(turns[:-1]), turns[-1]["content"])


def from_pair(prompt, response, system: str | None = None) -> Conversation:
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": "" if prompt is None else str(prompt)})
    return Conversation(tuple(turns), "" if response is None else str(response))


def template_sha256(tokenizer) -> str:
    """sha256 of the tokenizer's chat template, or of the plain layout's name without one."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(template, dict):  # several named templates
        template = json.dumps(template, sort_keys=True)
    return hashlib.sha256((template or PLAIN_LAYOUT).encode()).hexdigest()


def prompt_turns(prompt: str | list[dict] | tuple[dict, ...]) -> list[dict]:
    """A prompt as chat turns: a string is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def plain_prompt(prompt: str | list[dict] | tuple[dict, ...]) -> str:
    """The prompt's text for a tokenizer without chat template (one user turn: as written)."""
    turns = prompt_turns(prompt)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"


def render_prompt(tokenizer, prompt: str | list[dict] | tuple[dict, ...]) -> str:
    """The text the model is given to answer: template with generation prompt, or plain."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            prompt_turns(prompt), add_generation_prompt=True, tokenize=False
        )
    return plain_prompt(prompt)


def render(tokenizer, conversation: Conversation) -> str:
    """The whole conversation as the model is trained on it (what the fingerprint hashes)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        turns = [*conversation.prompt, {"role": "assistant", "content": conversation.response}]
        return tokenizer.apply_chat_template(turns, tokenize=False)
    return f"{render_prompt(None, conversation.prompt)} {conversation.response}"


def served_turns(prompt, system: str | None = None, preprocess=None) -> list[dict]:
    """A prompt as the model saw prompts in training: the data's system prompt first (unless
    the prompt brings its own) and every turn through the recorded preprocessing."""
    turns = prompt_turns(prompt)
    if system and (not turns or turns[0]["role"] != "system"):
        turns = [{"role": "system", "content": system}, *turns]
    if preprocess is not None:
        contents = preprocess([t["content"] for t in turns])
        turns = [{"role": t["role"], "content": c} for t, c in zip(turns, contents, strict=True)]
    return turns


def parse_prompt(value: str | list) -> list[dict]:
    """A prepared row's ``messages`` (JSON of the prompt turns) back to turns."""
    return json.loads(value) if isinstance(value, str) else list(value)
