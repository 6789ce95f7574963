"""Gates against a real champion, the audit trail and its readers, on one shared registry.

One module-scoped state home is built once (three flow runs of the tiny BERT): a first model
becomes champion; a second, barely trained one is refused by non-inferiority; a third passes
and waits as challenger. The tests then read that state the way users do: MLflow, the
``models`` / ``lineage`` commands, an offline load, and the comparison notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")
MODEL = "tiny-lora"
# Must-pass cases in the tiny vocabulary (reported, not gated: min_pass_rate 0).
GOLDEN = [
    {"text": "the film was great", "label": "positive"},
    {"text": "a very superb story", "label": "positive"},
    {"text": "the plot was awful", "label": "negative"},
    {"text": "a very dull movie", "label": 0},
]
TRAIN = {
    "epochs": 8,
    "learning_rate": 0.01,
    "batch_size": 8,
    "max_length": 16,
    "logging_steps": 1,
    "warmup_ratio": 0.0,
}


def gates(**overrides) -> dict:
    spec = {
        "absolute": {"accuracy": 0.0},
        "maximum": {"ece": 1.0},
        "non_inferiority": {"metrics": ["accuracy", "macro_f1"], "margin": 0.05},
        "base_model": {"score": True},
        "golden": {"path": "golden.jsonl", "min_pass_rate": 0.0},
        "slices": [
            {"name": "label", "column": "label", "minimum": 0.0, "min_examples": 1},
            {"name": "words", "length_buckets": [4], "minimum": 0.0, "min_examples": 1},
        ],
    }
    return spec | overrides


def build_learner(folder: Path) -> Path:
    """tests/tiny.py's BERT with weights large enough (and no dropout) for LoRA to learn the
    word-level task in seconds: 0.875 dev accuracy after 48 steps, where the default init
    (std 0.02) stays at chance."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from tests.tiny import CARD, FILLER, NEGATIVE, POSITIVE, SPECIAL

    folder.mkdir(parents=True, exist_ok=True)
    words = SPECIAL + POSITIVE + NEGATIVE + FILLER
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD.format(license="apache-2.0"))
    return folder


@dataclass(frozen=True)
class State:
    home: object
    folder: Path
    first: dict
    refused_run_id: str  # the refused evaluation's record
    refused_train_run: str  # the training run it evaluated
    refusal: str
    third: dict


@pytest.fixture(scope="module")
def state(tmp_path_factory, mlflow_template_db):
    from flows.finetune import finetune
    from tasks.core.catalog.mirror import import_folder
    from tasks.core.errors import GateFailed
    from tasks.core.home import Home
    from tasks.core.registry.history import history
    from tasks.core.tracking import client

    folder = tmp_path_factory.mktemp("gates-flow")
    home = Home(folder / "home").ensure()
    shutil.copyfile(mlflow_template_db, home.mlflow_db)
    uri = f"sqlite:///{home.mlflow_db}"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (
            ("LORAFLOW_HOME", str(home.root)),
            ("MLFLOW_TRACKING_URI", uri),
            ("MLFLOW_REGISTRY_URI", uri),
        ):
            mp.setenv(name, value)
        import_folder(build_learner(folder / "learner"), TINY_REPO, home.hf_hub_cache)
        (folder / "golden.jsonl").write_text("\n".join(json.dumps(g) for g in GOLDEN) + "\n")

        first = finetune(
            config_path=str(write_config(folder, in_process=True, train=TRAIN, gates=gates()))
        )
        worse = write_config(
            folder, "worse.yaml", in_process=True, train=TRAIN | {"max_steps": 1}, gates=gates()
        )
        with pytest.raises(GateFailed) as refused:
            finetune(config_path=str(worse))
        mlc = client(uri)
        (refused_run,) = [r for r in history(mlc, MODEL, kind="evaluation") if r.outcome == "fail"]
        # A generous margin lets another barely trained model pass: it waits as challenger.
        third_config = write_config(
            folder,
            "third.yaml",
            in_process=True,
            train=TRAIN | {"max_steps": 2, "seed": 7},
            gates=gates(non_inferiority={"metrics": ["accuracy"], "margin": 0.5}),
        )
        third = finetune(config_path=str(third_config))
        yield State(
            home,
            folder,
            first,
            refused_run.run_id,
            refused_run.train_run_id,
            str(refused.value),
            third,
        )


def _mlc(state: State):
    from tasks.core.tracking import client

    return client(f"sqlite:///{state.home.mlflow_db}")


def _artifact(mlc, run_id: str, path: str) -> dict:
    import mlflow

    return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{path}"))


def test_worse_challenger_is_refused_and_named(state):
    mlc = _mlc(state)
    first_run = mlc.get_run(state.first["evaluation_record"])
    refused_run = mlc.get_run(state.refused_run_id)
    first_acc = first_run.data.metrics["eval_accuracy"]
    worse_acc = refused_run.data.metrics["eval_accuracy"]
    print(f"first model accuracy {first_acc:.4f}, barely trained {worse_acc:.4f}")
    assert first_acc - worse_acc > 0.05, "the first model must be clearly better"

    # The refusal names the failing gate; the run keeps the figures and the decision.
    assert "non_inferiority_accuracy" in state.refusal
    decision = _artifact(mlc, state.refused_run_id, "gates/decision.json")
    assert decision["decision"] == "fail"
    failing = {g["gate"]: g for g in decision["gates"] if g["status"] == "fail"}
    assert "non_inferiority_accuracy" in failing
    row = failing["non_inferiority_accuracy"]
    assert row["figure"] == pytest.approx(worse_acc)
    assert row["threshold"] == pytest.approx(first_acc - 0.05)
    assert "champion v1" in row["detail"]
    tags = refused_run.data.tags
    assert tags["gate_decision"] == "fail" and tags["champion_compared"] == "1"
    assert tags["gate.non_inferiority_accuracy"] == "fail"
    # The champion was scored in the same run on the same split: its figure is the first's.
    assert refused_run.data.metrics["champion_eval_accuracy"] == pytest.approx(first_acc)
    assert "base_eval_accuracy" in refused_run.data.metrics

    # No version for the refused run, and no alias moved to it.
    assert refused_run.data.tags["mlflow.parentRunId"] == state.refused_train_run
    assert not mlc.search_model_versions(f"run_id = '{state.refused_train_run}'")
    aliases = mlc.get_registered_model(MODEL).aliases
    assert aliases == {"champion": 1, "challenger": 2}
    assert mlc.get_model_version(MODEL, "2").run_id == state.third["run_id"]


def test_decision_record_lists_every_gate(state):
    mlc = _mlc(state)
    decision = _artifact(mlc, state.first["evaluation_record"], "gates/decision.json")
    gates_by_name = {g["gate"]: g for g in decision["gates"]}
    assert {
        "min_accuracy",
        "max_ece",
        "non_inferiority_accuracy",
        "non_inferiority_macro_f1",
        "golden",
        "slice_label_0",
        "slice_label_1",
        "slice_words_ge4",
    } <= set(gates_by_name)
    assert gates_by_name["non_inferiority_accuracy"]["status"] == "skip"  # no champion yet
    for row in decision["gates"]:
        assert {"figure", "threshold", "status", "passed"} <= set(row)
    report = _artifact(mlc, state.first["evaluation_record"], "eval/report.json")
    assert [c["expected"] for c in report["golden"]] == [
        "positive",
        "positive",
        "negative",
        "negative",
    ]
    passed = sum(c["passed"] for c in report["golden"]) / len(GOLDEN)
    assert gates_by_name["golden"]["figure"] == pytest.approx(passed)
    artifacts = {a.path for a in mlc.list_artifacts(state.first["evaluation_record"], "eval")}
    assert "eval/confusion_matrix.png" in artifacts
    # The third run compares against champion v1 and lists golden outputs old vs new.
    third = _artifact(mlc, state.third["evaluation_record"], "eval/report.json")
    assert third["champion_version"] == "1"
    assert all(c["old_label"] is not None for c in third["golden"])


def test_version_carries_lineage_tags_and_card(state):
    mlc = _mlc(state)
    version = mlc.get_model_version(MODEL, "1")
    tags = version.tags
    for tag in (
        "base_repo_id",
        "base_revision",
        "tokenizer_revision",
        "dataset_sha256",
        "config_sha256",
        "config_artifact",
        "license_verdict",
        "validation_verdict",
        "gate_decision",
        "git_commit",
        "prefect.flow_run_id",
    ):
        assert tags.get(tag), tag
    assert tags["gate.min_accuracy"].startswith("pass: ")
    assert len(tags["prefect.flow_run_id"]) == 36
    # The version page renders the card without its YAML header (issue 14); the card file
    # keeps it, as the Hub reads it.
    assert version.description.startswith("# tiny-lora\n")
    for section in (
        "## Intended use", "## Data", "## Input preprocessing", "## Metrics", "## Gates",
        "## License",
    ):  # fmt: skip
        assert section in version.description
    assert tags["loraflow.evaluation_run_id"] == state.first["evaluation_record"]
    from tasks.core.registry.history import actor_pipeline, history

    (registration,) = history(mlc, MODEL, "1", kind="registration")
    assert registration.outcome == "registered" and registration.actor == actor_pipeline()
    card = Path(mlc.download_artifacts(registration.run_id, "model_card/README.md")).read_text()
    assert card.lower().startswith("---\nlicense: apache-2.0")
    assert card.endswith(version.description)


def cli(state: State, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HF_"))}
    env |= {"LORAFLOW_HOME": str(state.home.root), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli.app", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_models_and_lineage_commands(state):
    mlc = _mlc(state)
    listing = cli(state, "models", MODEL)
    assert listing.returncode == 0, listing.stderr
    assert "champion" in listing.stdout and "challenger" in listing.stdout
    assert state.refused_run_id[:12] in listing.stdout  # the refused candidate is listed
    assert "non_inferiority_accuracy" in listing.stdout

    result = cli(state, "lineage", f"{MODEL}@champion")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    tags = mlc.get_model_version(MODEL, "1").tags
    for fragment in (
        f"{TINY_REPO}@{tags['base_revision']}",
        tags["dataset_sha256"],
        tags["config_sha256"],
        "matches the resolved config",
        "license verdict",
        "validation verdict",
        "min_accuracy",
        tags["git_commit"],
        tags["prefect.flow_run_id"],
        "promote",
    ):
        assert fragment in out, fragment
    assert "registry:" in out  # the resolved config is printed

    missing = cli(state, "lineage", f"{MODEL}@nope")
    assert missing.returncode == 2 and "no such registered model or alias" in missing.stderr


def test_registered_model_loads_offline_in_a_fresh_process(state):
    code = (
        "import mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
        "print(m.predict(pd.DataFrame({'text': ['a great film', 'a dull plot']}))"
        ".to_json(orient='records'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HF_"))}
    uri = f"sqlite:///{state.home.mlflow_db}"
    env |= {
        "LORAFLOW_HOME": str(state.home.root),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(state.home.hf_home),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert {r["label"] for r in rows} <= {"negative", "positive"}
    assert all(0.5 <= r["score"] <= 1.0 for r in rows)
    # The same answers as the model the pipeline evaluated (loaded here, in-process).
    import mlflow
    import pandas as pd

    with pytest.MonkeyPatch.context() as mp:
        for name in ("LORAFLOW_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.setenv(name, env[name])
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        here = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(
            pd.DataFrame({"text": ["a great film", "a dull plot"]})
        )
    assert list(here["label"]) == [r["label"] for r in rows]
    assert list(here["score"]) == pytest.approx([r["score"] for r in rows], abs=1e-5)


def test_comparison_notebook_runs(state):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "notebooks/compare_champion_challenger.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HF_"))}
    env |= {"LORAFLOW_HOME": str(state.home.root), "LORAFLOW_MODEL": MODEL}
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute(env=env)
    outputs = "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "champion v1" in outputs and "challenger v2" in outputs
    assert "accuracy" in outputs and "macro_f1" in outputs  # the figures table is filled
    assert "disagreements" in outputs
    summary = yaml.safe_load(
        next(
            o["text"]
            for cell in notebook.cells
            if cell.cell_type == "code"
            for o in cell.outputs
            if o.get("name") == "stdout" and o.get("text", "").startswith("summary:")
        )
    )["summary"]
    assert summary["examples"] == 16
    assert (
        summary["both right"]
        + summary["only champion right"]
        + summary["only challenger right"]
        + summary["both wrong"]
        == 16
    )
