"""Generative data: chat rows to conversations, SFT checks, template-aware fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tasks.core.config.data import DataSpec
from tasks.core.data.chat import ConversationError, from_messages, template_sha256
from tasks.core.data.prepare import load_prepared, prepare
from tasks.core.training.sft import encode_pair, tokenize_sft
from tests.tiny import build_tiny_llama, sft_rows


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = build_tiny_llama(tmp_path_factory.mktemp("llama"))
    return AutoTokenizer.from_pretrained(str(folder))


def chat(prompt: str, response: str, system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": prompt},
                         {"role": "assistant", "content": response}]}  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec(train: Path, eval: Path, **checks) -> DataSpec:
    return DataSpec.model_validate(
        {
            "name": "chat",
            "train": {"path": train, "messages_column": "messages"},
            "eval": {"path": eval, "messages_column": "messages"},
            "pii": {"policy": "fail"},
            "checks": checks,
        }
    )


def chats(count: int, seed: int) -> list[dict]:
    return [chat(r["prompt"], r["response"]) for r in sft_rows(count, seed)]


def test_conversation_rules():
    conv = from_messages(chat("review : good", "positive")["messages"], system="be brief")
    assert conv.prompt[0] == {"role": "system", "content": "be brief"}
    assert conv.response == "positive" and conv.user_text == "review : good"
    with pytest.raises(ConversationError, match="no assistant turn"):
        from_messages([{"role": "user", "content": "hi"}])
    with pytest.raises(ConversationError, match="role 'tool'"):
        from_messages([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_prepared_chat_data_trains_on_the_answer_only(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", chats(40, 1))
    eval = write_jsonl(tmp_path / "eval.jsonl", chats(10, 2))
    report = prepare(spec(train, eval), tmp_path / "out", tokenizer, 64, "tiny@abc")
    assert report.verdict == "pass", report.failed
    assert report.chat_template_sha256 == template_sha256(tokenizer)
    data = load_prepared(report.prepared_path)
    assert data["train"].column_names == ["prompt", "messages", "response"]
    encoded = tokenize_sft(data["train"], tokenizer, 64)
    row = encoded[0]
    answer = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tokenizer.decode(answer).split()[0] in ("positive", "negative")


def test_template_change_changes_the_fingerprint(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", chats(20, 1))
    eval = write_jsonl(tmp_path / "eval.jsonl", chats(6, 2))
    first = prepare(spec(train, eval), tmp_path / "a", tokenizer, 64)
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.chat_template = tokenizer.chat_template.replace("</s>", "</s>\n")
    second = prepare(spec(train, eval), tmp_path / "b", other, 64)
    assert first.fingerprint and second.fingerprint and first.fingerprint != second.fingerprint
    assert first.chat_template_sha256 != second.chat_template_sha256


def test_bad_rows_fail_with_their_row_numbers(tmp_path, tokenizer):
    rows = chats(12, 1)
    rows[2] = {"messages": [{"role": "user", "content": "review : good"}]}  # no answer
    rows[4] = {
        "messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]
    }
    rows[5] = chat("review : bad", "mail me at jane.doe@example.com")
    rows[6] = chat(" ".join(["film"] * 80), "negative")  # prompt longer than max_length
    rows[7] = chat("review : dull", "")
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    eval = write_jsonl(tmp_path / "eval.jsonl", [rows[0], *chats(5, 3)])  # row 1 leaks
    report = prepare(spec(train, eval), tmp_path / "out", tokenizer, 32)
    failed = {(c.check, c.split): c for c in report.failed}
    assert failed[("conversation", "train")].examples == (3, 5)
    assert "no assistant turn" in failed[("conversation", "train")].detail
    assert failed[("pii", "train")].examples == (6,)
    assert 7 in failed[("token_lengths", "train")].examples
    assert failed[("empty_text", "train")].examples == (8,)
    assert failed[("leakage", "eval")].figure > 0
    assert report.fingerprint == "" and report.prepared_path == ""
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_prompt_response_columns_with_split_and_system_prompt(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", sft_rows(50, 4))
    data = DataSpec.model_validate(
        {
            "name": "pairs",
            "system_prompt": "answer with one word",
            "train": {"path": path, "prompt_column": "prompt", "response_column": "response",
                      "max_samples": 20},
            "split": {"eval_fraction": 0.2},
            "checks": {"duplicates": "off", "leakage": "off"},
        }
    )  # fmt: skip
    report = prepare(data, tmp_path / "out", tokenizer, 64)
    assert report.verdict == "pass", report.failed
    assert report.rows["train"] == 20
    first = json.loads(load_prepared(report.prepared_path)["train"][0]["messages"])
    assert first[0] == {"role": "system", "content": "answer with one word"}


def test_encode_pair_takes_turns(tokenizer):
    turns = [{"role": "system", "content": "film"}, {"role": "user", "content": "good"}]
    pair = encode_pair(tokenizer, turns, "positive", 64)
    assert pair["labels"].count(-100) < len(pair["labels"])


def test_served_prompts_get_the_system_prompt_and_preprocessing():
    from tasks.core.data.chat import served_turns

    turns = served_turns(
        "  Good FILM ", "be brief", lambda texts: [t.strip().lower() for t in texts]
    )
    assert turns == [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "good film"}]  # fmt: skip
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
    assert served_turns(own, "be brief") == own
