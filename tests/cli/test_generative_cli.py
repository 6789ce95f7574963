"""``loraflow validate`` refuses a task that does not fit the data, both ways, in one line."""

from __future__ import annotations

import json

import yaml

from tests.cli.test_cli import error_lines, loraflow
from tests.flows.conftest import write_config


def test_causal_lm_on_classification_data_is_exit_2(tmp_path):
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["train"]["task"] = "causal-lm"
    config.write_text(yaml.safe_dump(data))
    result = loraflow("validate", config)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "train.task causal-lm needs generative data" in line and "Traceback" not in result.stderr


def test_classifier_on_chat_data_is_exit_2(tmp_path):
    chats = tmp_path / "chats.jsonl"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chats.write_text(json.dumps({"messages": turns}) + "\n")
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["data"]["labels"]
    data["data"]["train"] = {"path": str(chats), "messages_column": "messages"}
    data["data"]["eval"] = {"path": str(chats), "messages_column": "messages"}
    config.write_text(yaml.safe_dump(data))
    result = loraflow("validate", config)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "train.task sequence-classification needs classification data" in line
