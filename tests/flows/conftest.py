from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.tiny import sentiment_rows, write_tsv

TINY_REPO = "loraflow-test/tiny-bert"


def write_config(
    folder: Path, filename: str = "experiment.yaml", in_process: bool = False, **overrides
) -> Path:
    """A complete experiment config over tiny data; ``overrides`` replace top-level sections.

    ``in_process``: train in the test's process (``train.launcher: in-process``), for tests
    about what comes after training. A subprocess agent's fresh imports (torch, transformers,
    PEFT) cost ~18 s of CPU per training on the 2-core AMD machine (test_decision_history:
    110 CPU-s, 91 in-process); the subprocess launcher keeps its own end-to-end tests
    (test_finetune_flow, test_training_resume, the CLI, ops).
    """
    train = write_tsv(folder / "train.tsv", "sentence", sentiment_rows(48, seed=1))
    dev = write_tsv(folder / "dev.tsv", "content", sentiment_rows(16, seed=2))
    config = {
        "name": "tiny-test",
        "discovery": {"repo_id": TINY_REPO},
        "license": {"policy_file": str(REPO / "configs/policies/licenses.yaml")},
        "data": {
            "name": "tiny",
            "license": "mit",
            "labels": ["negative", "positive"],
            "train": {"path": str(train), "text_column": "sentence", "label_column": "label"},
            "eval": {"path": str(dev), "text_column": "content", "label_column": "label"},
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {
            "epochs": 2,
            "learning_rate": 0.01,
            "batch_size": 8,
            "max_length": 16,
            "logging_steps": 1,
            "warmup_ratio": 0.0,
        },
        "eval": {"batch_size": 16},
        "gates": {"absolute": {"accuracy": 0.0}},
        "registry": {"model_name": "tiny-lora", "experiment": "tests"},
    }
    config.update(overrides)
    if in_process:
        config["train"] = {**config["train"], "launcher": "in-process"}
    path = folder / filename
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def mirrored(home, tiny_bert_dir):
    """The tiny BERT imported into this test's cache; returns its revision."""
    from tasks.core.catalog.mirror import import_folder

    return import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache).revision


def settled_task_runs(flow_run_id, timeout: float = 20.0, **read) -> list:
    """The flow run's task runs once the server has recorded them in full.

    Task runs reach Prefect's server as events, written by its task-run recorder in the
    background: right after a flow returns, one can still carry the placeholder name Prefect
    gives before ``task_run_name`` is rendered (seen: ``serving-form-e30``) or lack its final
    state. Every loraflow task run name has a space ("serving form tiny-lora v1")."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=50,
                **read,
            )
            settled = all(" " in r.name and r.state and r.state.is_final() for r in runs)
            if (runs and settled) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)
