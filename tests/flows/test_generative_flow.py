"""The finetune flow on chat data: a tiny random Llama through all seven stages."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from flows.finetune import finetune
from tasks.core.errors import GateFailed
from tasks.core.serving.models import pyfunc_loader
from tasks.core.tracking import client
from tests.conftest import REPO
from tests.tiny import build_tiny_llama, sft_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")
TINY_LLAMA = "loraflow-test/tiny-llama"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")


@pytest.fixture
def llama_mirrored(home, llama_dir):
    from tasks.core.catalog.mirror import import_folder

    return import_folder(llama_dir, TINY_LLAMA, home.hf_hub_cache).revision


def chat_rows(count: int, seed: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": r["prompt"]},
                      {"role": "assistant", "content": r["response"]}]}
        for r in sft_rows(count, seed)
    ]  # fmt: skip


def write_chat_config(folder: Path, **overrides) -> Path:
    train, eval = folder / "train.jsonl", folder / "eval.jsonl"
    train_rows = chat_rows(48, 1)
    train_rows.append(train_rows[0])  # a repeated conversation: a duplicates finding (warn)
    train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    eval.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(16, 2)))
    golden = folder / "golden.jsonl"
    golden.write_text(
        json.dumps({"prompt": "review : the film was good", "contains": ["i"]}) + "\n"
    )
    config = {
        "name": "tiny-chat",
        "discovery": {"repo_id": TINY_LLAMA},
        "license": {"policy_file": str(REPO / "configs/policies/licenses.yaml")},
        "data": {
            "name": "tiny-chat",
            "license": "mit",
            "train": {"path": str(train), "messages_column": "messages"},
            "eval": {"path": str(eval), "messages_column": "messages"},
            "checks": {"duplicates": "warn", "leakage": "off"},
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"task": "causal-lm", "epochs": 8, "learning_rate": 0.03, "batch_size": 8,
                  "max_length": 32, "logging_steps": 2, "warmup_ratio": 0.0},
        "eval": {"batch_size": 16, "generation": {"max_new_tokens": 3},
                 "format": {"kind": "regex", "pattern": "positive|negative"}},
        "gates": {
            "absolute": {"exact_match": 0.6, "format_valid": 0.8},
            "maximum": {"empty_rate": 0.2},
            "non_inferiority": {"metrics": ["exact_match"], "margin": 0.05},
            "base_model": {"score": True, "min_gain": 0.3, "metrics": ["exact_match"]},
            "golden": {"path": str(golden), "min_pass_rate": 0.0},
        },
        "registry": {"model_name": "tiny-chat", "experiment": "tests"},
    }  # fmt: skip
    config.update(overrides)
    path = folder / "chat.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_chat_data_through_all_stages(home, llama_mirrored, tmp_path):
    mlc = client(home.tracking_uri)
    state = finetune(config_path=str(write_chat_config(tmp_path)), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["metrics"]["exact_match"] >= 0.6, summary
    evaluation = mlc.get_run(summary["evaluation_record"])
    metrics = evaluation.data.metrics
    assert metrics["eval_format_valid"] >= 0.8 and metrics["base_eval_exact_match"] < 0.3
    assert metrics["eval_perplexity"] < metrics["base_eval_perplexity"]
    assert evaluation.data.tags["gate.base_gain_exact_match"] == "pass"
    worst = mlflow.artifacts.load_dict(f"runs:/{evaluation.info.run_id}/eval/worst_answers.json")
    assert set(worst[0]) == {"prompt", "reference", "output", "rouge_l"}

    (version,) = mlc.search_model_versions("name = 'tiny-chat'")
    assert len(version.tags["chat_template_sha256"]) == 64
    assert version.tags["gate_decision"] == "pass"
    assert mlc.get_registered_model("tiny-chat").aliases == {"challenger": 1, "champion": 1}

    # The registered generator answers offline from the mirror, with its pinned budget.
    loaded = mlflow.pyfunc.load_model("models:/tiny-chat@champion")
    answers = loaded.predict(pd.DataFrame({"prompt": ["review : a good film", "review : dull"]}))
    assert list(answers.columns) == ["output", "output_tokens"]
    assert (answers["output_tokens"] <= 3).all()
    assert set(answers["output"]) <= {"positive", "negative"}
    predict = pyfunc_loader("tiny-chat", "1")  # how the service loads it: for /generate
    assert predict.generator and predict.max_new_tokens == 3
    short, default = predict([("review : a good film", 1), "review : dull"])
    assert short[1] <= 1 and default[0] in ("positive", "negative")

    # A challenger trained to answer the opposite is refused on quality (vs the champion).
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    config = yaml.safe_load(write_chat_config(flipped).read_text())
    rows = [
        json.loads(line) for line in Path(config["data"]["train"]["path"]).read_text().splitlines()
    ]
    for row in rows:
        answer = row["messages"][-1]
        answer["content"] = "negative" if answer["content"] == "positive" else "positive"
    Path(config["data"]["train"]["path"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    config["gates"]["absolute"] = {}
    config["gates"]["base_model"]["min_gain"] = None
    path = flipped / "chat.yaml"
    path.write_text(yaml.safe_dump(config))
    state = finetune(config_path=str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="non_inferiority_exact_match"):
        state.result()
    assert [str(v.version) for v in mlc.search_model_versions("name = 'tiny-chat'")] == ["1"]
