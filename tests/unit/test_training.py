"""The training engine on tiny random models: classification, causal-LM SFT, exact resume."""

from __future__ import annotations

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file

from tasks.core.catalog.mirror import import_folder
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training import int8_base
from tasks.core.training import run as training_run
from tasks.core.training.checkpoints import list_checkpoints
from tasks.core.training.modeling import ModelRef
from tasks.core.training.precision import cpu_bf16_unit, cpu_flags
from tasks.core.training.run import fine_tune, tokenize_early
from tasks.core.training.runs import ADAPTER_ARTIFACT, TrainJob, job_dir
from tests.tiny import build_tiny_llama, sentiment_rows, sft_rows

LABELS = ["negative", "positive"]
TINY_BERT, TINY_LLAMA = "loraflow-test/tiny-bert", "loraflow-test/tiny-llama"


class Interrupt(Exception):
    pass


@pytest.fixture
def bert(home, tiny_bert_dir) -> ModelRef:
    return ModelRef(TINY_BERT, import_folder(tiny_bert_dir, TINY_BERT, home.hf_hub_cache).revision)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def llama(home, tiny_llama_dir) -> ModelRef:
    return ModelRef(
        TINY_LLAMA, import_folder(tiny_llama_dir, TINY_LLAMA, home.hf_hub_cache).revision
    )


@pytest.fixture
def sentiment(tmp_path) -> str:
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})

    def split(count, seed):
        rows = sentiment_rows(count, seed)
        return Dataset.from_dict(
            {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features=features
        )

    path = tmp_path / "prepared-sentiment"
    DatasetDict({"train": split(48, 1), "eval": split(16, 2)}).save_to_disk(str(path))
    return str(path)


@pytest.fixture
def pairs(tmp_path) -> str:
    path = tmp_path / "prepared-sft"
    train, dev = Dataset.from_list(sft_rows(48, 1)), Dataset.from_list(sft_rows(8, 2))
    DatasetDict({"train": train, "eval": dev}).save_to_disk(str(path))
    return str(path)


def new_run(home, name="training"):
    mlc = client(home.tracking_uri)
    experiment = ensure_experiment(mlc, name, home.mlflow_artifacts)
    return mlc, mlc.create_run(experiment).info.run_id


def job(ref, prepared, labels, lora, spec, run_id, home, identity, work_dir=None) -> TrainJob:
    return TrainJob(
        repo_id=ref.repo_id, revision=ref.revision, prepared_path=prepared, labels=list(labels),
        lora=lora.model_dump(mode="json"), train=spec.model_dump(mode="json"),
        tracking_uri=home.tracking_uri, run_id=run_id, work_dir=str(work_dir or home.work_dir),
        cache_dir=str(home.hf_hub_cache), identity=identity,
    )  # fmt: skip


def history(mlc, run_id, name="train_loss"):
    return [(m.step, m.value) for m in mlc.get_metric_history(run_id, name)]


def test_classifier_trains_records_every_step_and_uploads_the_adapter(home, bert, sentiment):
    mlc, run_id = new_run(home)
    spec = TrainSpec(
        epochs=2, batch_size=8, learning_rate=0.01, logging_steps=1, max_length=16, eval_steps=6
    )
    events = []
    result = fine_tune(
        job(bert, sentiment, LABELS, LoraSpec(r=4, alpha=8), spec, run_id, home, "id-cls"),
        on_event=events.append,
    )
    assert result.steps == 12 and result.resumed_from_step == 0  # 48 rows / 8 x 2 epochs
    assert [step for step, _ in history(mlc, run_id)] == list(range(1, 13))
    assert [step for step, _ in history(mlc, run_id, "val_loss")] == [6, 12]
    for name in ("learning_rate", "samples_per_s", "tokens_per_s", "grad_norm"):
        assert len(history(mlc, run_id, name)) == 12, name
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 13))
    run = mlc.get_run(run_id)
    assert run.data.params["lora.resolved_target_modules"] == "['query', 'value']"
    assert run.data.params["train.last_layer_first_token_only"] == "True"
    unit = cpu_bf16_unit(cpu_flags())  # precision auto: bf16 autocast where the CPU has it
    assert run.data.params["train.resolved_precision"] == ("bf16" if unit else "no")
    assert run.data.params["train.precision_reason"].startswith("auto: CPU ")
    assert run.data.metrics["train_steps"] == 12 and run.data.metrics["train_peak_rss_mb"] > 0
    adapter = {a.path for a in mlc.list_artifacts(run_id, ADAPTER_ARTIFACT)}
    assert {"adapter/adapter_model.safetensors", "adapter/loraflow_base.json"} <= adapter
    assert {a.path for a in mlc.list_artifacts(run_id, "plots")} == {"plots/loss_curve.png"}
    assert mlc.list_artifacts(run_id, "checkpoints") == []  # removed once the adapter is logged
    assert not (job_dir(home.work_dir, "id-cls") / "checkpoints").exists()


@pytest.mark.skipif(not int8_base.available(), reason="no x86 quantized engine")
def test_int8_training_records_its_precision_and_tracks_fp32(home, bert, sentiment):
    """``precision: int8`` (opt-in): the run says so, and its losses stay near fp32's."""
    curves = {}
    for precision in ("fp32", "int8"):
        mlc, run_id = new_run(home)
        spec = TrainSpec(
            epochs=1, batch_size=8, learning_rate=0.01, logging_steps=1, max_length=16,
            precision=precision, seed=7,
        )  # fmt: skip
        one = job(bert, sentiment, LABELS, LoraSpec(r=4, alpha=8), spec, run_id, home, precision)
        fine_tune(one)
        params = mlc.get_run(run_id).data.params
        assert params["train.resolved_precision"] == ("no" if precision == "fp32" else "int8")
        assert params["train.precision_reason"] == f"configured: {precision}"
        curves[precision] = [loss for _, loss in history(mlc, run_id)]
    assert len(curves["int8"]) == len(curves["fp32"]) == 6
    assert curves["int8"] != curves["fp32"]  # the int8 matmuls did run
    assert max(abs(a - b) for a, b in zip(curves["int8"], curves["fp32"], strict=True)) < 0.05


def test_splits_tokenized_in_the_agent_train_exactly_as_a_rank_s_own(home, bert, sentiment):
    """The CPU agent tokenizes once before it forks (``tokenize_early``); a rank that finds
    them trains step for step as one that tokenized its splits itself."""
    spec = TrainSpec(
        epochs=1, batch_size=8, learning_rate=0.01, logging_steps=1, max_length=16, eval_steps=3
    )
    curves = []
    for early in (False, True):
        mlc, run_id = new_run(home)
        lora = LoraSpec(r=4, alpha=8)
        one = job(bert, sentiment, LABELS, lora, spec, run_id, home, f"id-early-{early}")
        if early:
            tokenize_early(one)
            assert len(training_run._EARLY) == 1
        fine_tune(one)
        assert not training_run._EARLY  # taken by the rank that trained, not kept
        curves.append((history(mlc, run_id), history(mlc, run_id, "val_loss")))
    assert len(curves[0][0]) == 6 and len(curves[0][1]) == 2
    assert curves[0] == curves[1]


def test_resume_after_a_crash_continues_exactly_where_training_stopped(home, bert, sentiment):
    """A crash after step 5 (checkpoint at 4), then a resume, equals an uninterrupted run."""
    spec = TrainSpec(
        epochs=3, batch_size=8, learning_rate=0.01, logging_steps=1, max_length=16,
        checkpoint_steps=2, gradient_accumulation_steps=2, precision="fp32",
    )  # fmt: skip
    lora = LoraSpec(r=4, alpha=8, dropout=0.1)  # dropout: the RNG state must be restored too

    def train(run_id, identity, on_event=None):
        return fine_tune(
            job(bert, sentiment, LABELS, lora, spec, run_id, home, identity), on_event=on_event
        )

    mlc, straight = new_run(home)
    train(straight, "straight")

    _, resumed = new_run(home)

    def crash(event):
        if event.kind == "step" and event.step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(resumed, "resumed", crash)
    root = job_dir(home.work_dir, "resumed") / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002", "step-00000004"]
    assert [s for s, _ in history(mlc, resumed)] == [1, 2, 3, 4]  # nothing past the checkpoint
    assert {a.path for a in mlc.list_artifacts(resumed, "checkpoints")} == {
        "checkpoints/latest.json",
        "checkpoints/step-00000004",
    }

    result = train(resumed, "resumed")
    assert result.resumed_from_step == 4 and result.steps == 9  # 6 micro-batches / 2 x 3 epochs
    assert mlc.get_run(resumed).data.tags["loraflow.resumed_from_step"] == "4"
    one, two = history(mlc, straight), history(mlc, resumed)
    assert [s for s, _ in two] == list(range(1, 10))
    assert [v for _, v in two] == pytest.approx([v for _, v in one], abs=1e-6)
    weights = [load_file(download(mlc, r, home)) for r in (straight, resumed)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-6, rtol=1e-5)


def test_resume_on_another_worker_uses_the_copy_in_the_run_artifacts(home, bert, sentiment):
    spec = TrainSpec(epochs=1, batch_size=8, logging_steps=1, max_length=16, checkpoint_steps=3)
    mlc, run_id = new_run(home)

    def crash(event):
        if event.step == 4:
            raise Interrupt

    args = (bert, sentiment, LABELS, LoraSpec(r=4), spec, run_id, home, "moved")
    with pytest.raises(Interrupt):
        fine_tune(job(*args), on_event=crash)
    other_worker = home.root / "other-worker"  # an empty work dir: only MLflow is shared
    result = fine_tune(job(*args, work_dir=other_worker))
    assert result.resumed_from_step == 3 and result.steps == 6
    assert [s for s, _ in history(mlc, run_id)] == list(range(1, 7))


def download(mlc, run_id, home):
    import mlflow

    target = home.root / "downloads" / run_id
    mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="adapter", dst_path=str(target), tracking_uri=home.tracking_uri
    )
    return str(target / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_causal_lm_sft_learns_the_responses(home, llama, pairs, packing):
    mlc, run_id = new_run(home)
    spec = TrainSpec(
        task="causal-lm", epochs=4, batch_size=8, learning_rate=0.02, logging_steps=6,
        max_length=32, packing=packing, checkpoint_steps=None, eval_steps=12,
    )  # fmt: skip
    lora = LoraSpec(r=8, alpha=16, dropout=0.0)
    result = fine_tune(job(llama, pairs, [], lora, spec, run_id, home, f"sft-{packing}"))
    assert result.steps == 24
    run = mlc.get_run(run_id)
    assert run.data.params["lora.resolved_target_modules"] == "['q_proj', 'v_proj']"
    losses = [v for _, v in history(mlc, run_id)]
    assert losses[-1] < 0.3 * losses[0], losses  # the response is learnt
    val = [v for _, v in history(mlc, run_id, "val_loss")]
    assert len(val) == 2 and val[-1] < 0.3 * losses[0], val
    import mlflow

    base = mlflow.artifacts.load_dict(f"runs:/{run_id}/adapter/loraflow_base.json")
    assert base["task"] == "causal-lm" and base["repo_id"] == TINY_LLAMA
