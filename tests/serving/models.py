"""Test-only registered models: tiny LoRA classifiers, one made slow and one made to fail by
configuration (``model_config`` of the logged pyfunc), served exactly like the real one."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from tasks.core.registry.pyfunc import PIP_REQUIREMENTS, SIGNATURE, LoraClassifierModel

LABELS = ["negative", "positive"]


class SlowModel(LoraClassifierModel):
    """The real classifier with ``delay_ms`` added to every predict call."""

    def load_context(self, context):
        super().load_context(context)
        self.delay_s = float((context.model_config or {}).get("delay_ms", 0)) / 1000

    def predict(self, context, model_input, params=None):
        time.sleep(self.delay_s)
        return super().predict(context, model_input, params)


class FailingModel(LoraClassifierModel):
    """The real classifier, except that a batch holding ``fail_on`` raises."""

    def load_context(self, context):
        super().load_context(context)
        self.fail_on = (context.model_config or {}).get("fail_on", "boom")

    def predict(self, context, model_input, params=None):
        if any(self.fail_on in text for text in model_input["text"]):
            raise ValueError(f"cannot score {self.fail_on!r}")
        return super().predict(context, model_input, params)


def untrained_adapter(cache: Path, revision: str, out: Path, seed: int) -> Path:
    """A LoRA adapter folder on the mirrored tiny BERT; the seed picks the classifier head."""
    import torch

    from tasks.core.config.train import LoraSpec
    from tasks.core.training.modeling import (
        ModelRef,
        add_lora,
        load_base,
        load_tokenizer,
        save_adapter,
    )
    from tests.flows.conftest import TINY_REPO

    torch.manual_seed(seed)
    ref = ModelRef(TINY_REPO, revision)
    model = add_lora(load_base(ref, LABELS, cache), LoraSpec(r=4, alpha=8, dropout=0.0))
    return save_adapter(model, load_tokenizer(ref, cache), ref, LABELS, out)


def train_adapter(
    cache: Path, revision: str, rows: list[tuple[int, str]], out: Path, seed: int
) -> Path:
    """LoRA on the mirrored tiny BERT trained on ``rows`` with a plain loop: about a second,
    where ``transformers.Trainer`` takes tens on a busy 2-core machine. 192 word-sentiment rows
    x 6 epochs reach ~0.97 accuracy; flipped labels give a model that is wrong as often."""
    import torch

    from tasks.core.config.train import LoraSpec
    from tasks.core.training.modeling import (
        ModelRef,
        add_lora,
        load_base,
        load_tokenizer,
        save_adapter,
    )
    from tests.flows.conftest import TINY_REPO

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend for the shared cores
    try:
        torch.manual_seed(seed)
        ref = ModelRef(TINY_REPO, revision)
        tokenizer = load_tokenizer(ref, cache)
        model = add_lora(load_base(ref, LABELS, cache), LoraSpec(r=4, alpha=8, dropout=0.0))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=0.05)
        epochs, batch = 6, 8
        schedule = torch.optim.lr_scheduler.LinearLR(
            optimizer, 1.0, 0.0, total_iters=epochs * -(-len(rows) // batch)
        )
        model.eval()  # no dropout: a 32-wide model learns the task in seconds without it
        for _ in range(epochs):
            for start in range(0, len(rows), batch):
                chunk = rows[start : start + batch]
                encoded = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True)
                loss = model(**encoded, labels=torch.tensor([y for y, _ in chunk])).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                schedule.step()
        return save_adapter(model, tokenizer, ref, LABELS, out)
    finally:
        torch.set_num_threads(threads)


def prepared_eval(rows: list[tuple[int, str]], folder: Path) -> Path:
    """An eval split saved like the validation stage saves it (text + ClassLabel label)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    table = Dataset.from_dict(
        {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features=features
    )
    DatasetDict({"eval": table}).save_to_disk(str(folder))
    return folder


def register_trained(
    mlc: MlflowClient, name: str, adapter: Path, eval_folder: Path, experiment: str = "tests"
) -> tuple[str, str]:
    """(version, run id): a run recording its prepared eval split as the pipeline does
    (``data/validation.json``), registered through the project's own ``register``."""
    from tasks.core.registry.versions import register

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    run_id = mlc.create_run(experiment_id).info.run_id
    mlc.log_dict(run_id, {"prepared_path": str(eval_folder)}, "data/validation.json")
    registration = register(mlc, name, run_id, adapter, {"test": "canary"}, "tiny test model")
    mlc.set_terminated(run_id)
    return registration.version, run_id


def register_version(
    mlc: MlflowClient,
    name: str,
    adapter: Path,
    run_id: str | None = None,
    python_model: LoraClassifierModel | None = None,
    model_config: dict | None = None,
    experiment: str = "tests",
    artifacts: dict[str, str] | None = None,
) -> str:
    """Log ``python_model`` (default: the real one) with ``adapter`` (and any further
    ``artifacts``, e.g. a reference profile) and register a version."""
    if run_id is None:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        run_id = mlc.create_run(experiment_id).info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=f"model-{time.monotonic_ns()}",
            python_model=python_model or LoraClassifierModel(),
            artifacts={"adapter": str(adapter), **(artifacts or {})},
            signature=SIGNATURE,
            model_config=model_config,
            pip_requirements=PIP_REQUIREMENTS,
        )
    return str(mlflow.register_model(info.model_uri, name).version)
