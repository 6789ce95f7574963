"""Several CPU training processes (the training agent's ranks, gloo, one gradient all-reduce per step) train
exactly what one process trains, and a SIGTERM to any of them stops all at the same step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import psutil
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file

from tasks.core.catalog.mirror import import_folder
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.errors import TrainingProcessFailed
from tasks.core.home import REPO_ROOT
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training.checkpoints import list_checkpoints, read_state
from tasks.core.training.launcher import launch
from tasks.core.training.run import fine_tune
from tasks.core.training.runs import ADAPTER_ARTIFACT, TrainJob, job_dir
from tests.tiny import build_tiny_bert, build_tiny_llama, sentiment_rows, sft_rows

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A BERT without dropout (so one and two processes draw no different masks) and a Llama."""
    root = tmp_path_factory.mktemp("models")
    return {
        "sequence-classification": build_tiny_bert(root / "bert", dropout=0.0),
        "causal-lm": build_tiny_llama(root / "llama"),
    }


def prepared(tmp_path, task: str) -> str:
    if task == "causal-lm":
        train, dev = Dataset.from_list(sft_rows(40, 1)), Dataset.from_list(sft_rows(8, 2))
    else:
        features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})

        def split(count, seed):
            rows = sentiment_rows(count, seed)
            return Dataset.from_dict(
                {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features
            )

        train, dev = split(40, 1), split(8, 2)
    path = tmp_path / f"prepared-{task}"
    DatasetDict({"train": train, "eval": dev}).save_to_disk(str(path))
    return str(path)


def job(home, task, folder, data, spec: TrainSpec, identity: str) -> TrainJob:
    repo = f"loraflow-test/{task}"
    revision = import_folder(folder, repo, home.hf_hub_cache).revision
    mlc = client(home.tracking_uri)
    run_id = mlc.create_run(ensure_experiment(mlc, "processes", home.mlflow_artifacts)).info.run_id
    return TrainJob(
        repo_id=repo,
        revision=revision,
        prepared_path=data,
        labels=[] if task == "causal-lm" else LABELS,
        lora=LoraSpec(r=4, alpha=8, dropout=0.0).model_dump(mode="json"),
        train=spec.model_dump(mode="json"),
        tracking_uri=home.tracking_uri,
        run_id=run_id,
        work_dir=str(home.work_dir),
        cache_dir=str(home.hf_hub_cache),
        identity=identity,
    )


def curve(home, run_id):
    return [m.value for m in client(home.tracking_uri).get_metric_history(run_id, "train_loss")]


def adapter_weights(home, run_id):
    import mlflow

    folder = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=ADAPTER_ARTIFACT, tracking_uri=home.tracking_uri
    )
    return load_file(f"{folder}/adapter_model.safetensors")


@pytest.mark.parametrize("task", ["sequence-classification", "causal-lm"])
def test_two_processes_train_what_one_process_trains(home, models, tmp_path, task):
    # 40 rows in micro-batches of 6 (the last one 4) and 2 accumulation steps: uneven shares
    # per process, and (causal) different target-token counts per process.
    spec = TrainSpec(
        task=task, epochs=2, batch_size=6, gradient_accumulation_steps=2, learning_rate=0.02,
        logging_steps=1, max_length=24, checkpoint_steps=None, cpu_processes=2,
        precision="fp32",  # exact: bf16 rounding would depend on how a batch is shared out
    )  # fmt: skip
    data = prepared(tmp_path, task)
    two = job(home, task, models[task], data, spec, "two")
    result = launch(two)
    assert result.steps == 8  # ceil(7 micro-batches / 2) x 2 epochs

    one = job(home, task, models[task], data, spec, "one")

    fine_tune(one)
    mlc = client(home.tracking_uri)
    params = mlc.get_run(two.run_id).data.params
    assert params["train.resolved_precision"] == "no"
    assert params["train.precision_reason"] == "configured: fp32"
    assert curve(home, two.run_id) == pytest.approx(curve(home, one.run_id), rel=1e-4)
    assert len(set(curve(home, one.run_id))) > 1  # it trained
    a, b = adapter_weights(home, two.run_id), adapter_weights(home, one.run_id)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(home, models, tmp_path):
    spec = TrainSpec(
        epochs=200,
        batch_size=4,
        max_length=16,
        logging_steps=1,
        checkpoint_steps=None,
        cpu_processes=2,
    )  # fmt: skip  - 2,000 steps: far more than run before the signal lands
    task = "sequence-classification"
    two = job(home, task, models[task], prepared(tmp_path, task), spec, "sigterm-2")
    signalled = []

    def stop_rank_1(event):
        if event.kind == "step" and event.step >= 3 and not signalled:
            for process in psutil.Process().children(recursive=True):
                try:
                    if process.name() == "loraflow-rank1":
                        process.send_signal(signal.SIGTERM)
                        signalled.append(event.step)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue

    with pytest.raises(TrainingProcessFailed, match="SIGTERM after step"):
        launch(two, on_event=stop_rank_1)
    assert len(signalled) == 1
    (checkpoint,) = list_checkpoints(job_dir(home.work_dir, "sigterm-2") / "checkpoints")
    stopped_at = read_state(checkpoint).step
    assert signalled[0] <= stopped_at < 2000
    error = json.loads((job_dir(home.work_dir, "sigterm-2") / "error.json").read_text())
    assert error["preempted"] is True and f"after step {stopped_at};" in error["message"]


def run_signalled(job: TrainJob, signal_spec: str, timeout: float = 180):
    """Train ``job`` under the training agent with tests/unit/signal_child.py landing the
    signal."""
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(asdict(job)))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "LORAFLOW_TEST_SIGNAL": signal_spec,
    }
    argv = [sys.executable, "-m", "tasks.core.training.agent", "--procs", "2"]
    argv += ["--entry", "tests.unit.signal_child", str(job_file)]
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env), folder


def stopped_steps(folder) -> dict[int, int]:
    return {
        rank: json.loads((folder / f"stopped-{rank}.json").read_text())["step"]
        for rank in (0, 1)
        if (folder / f"stopped-{rank}.json").exists()
    }


# A SIGTERM seen by the step's flag read stops every rank after that step; one that lands
# after the read (before, during or after the exchange) stops every rank after the next one.
# The default run covers each moment once, on alternating ranks (20 s a case: two processes
# start torch); `make test-slow` runs the other rank of each as well.
@pytest.mark.parametrize(
    ("rank", "moment", "stops_after"),
    [
        (0, "before", 4), pytest.param(1, "before", 4, marks=pytest.mark.slow),
        pytest.param(0, "window", 5, marks=pytest.mark.slow), (1, "window", 5),
        (0, "after", 5), pytest.param(1, "after", 5, marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_sigterm_at_any_moment_stops_every_rank_after_the_same_step(
    home, models, tmp_path, rank, moment, stops_after
):
    spec = TrainSpec(
        epochs=50,
        batch_size=4,
        max_length=16,
        logging_steps=1,
        checkpoint_steps=None,
        cpu_processes=2,
        collective_timeout_s=30,
    )  # fmt: skip  - 500 steps; a rank that stopped alone would fail after 30 s, not hang
    task = "sequence-classification"
    identity = f"signal-{rank}-{moment}"
    job_ = job(home, task, models[task], prepared(tmp_path, task), spec, identity)
    proc, folder = run_signalled(job_, f"{rank}:4:{moment}:SIGTERM")
    assert proc.wait(timeout=180) != 0
    assert stopped_steps(folder) == {0: stops_after, 1: stops_after}
    error = json.loads((folder / "error.json").read_text())
    assert error["preempted"] is True and f"after step {stops_after};" in error["message"]
    (checkpoint,) = list_checkpoints(folder / "checkpoints")
    assert read_state(checkpoint).step == stops_after


def test_a_killed_rank_fails_the_job_in_bounded_time_and_the_retry_resumes(home, models, tmp_path):
    spec = TrainSpec(
        epochs=2,
        batch_size=4,
        max_length=16,
        logging_steps=1,
        checkpoint_steps=5,
        cpu_processes=2,
        collective_timeout_s=10,
    )  # fmt: skip  - 20 steps, checkpoints at 5, 10, 15
    task = "sequence-classification"
    job_ = job(home, task, models[task], prepared(tmp_path, task), spec, "sigkill")
    proc, folder = run_signalled(job_, "1:8:window:SIGKILL")
    code = proc.wait(timeout=120)
    assert code != 0
    # CLOCK_MONOTONIC is one clock for every process of the machine, and no step moves it.
    killed_at = json.loads((folder / "signalled-1.json").read_text())["monotonic"]
    # Rank 0 learned of it from its collective (peer gone) or from the agent, well within the
    # collective timeout plus the agent's grace.
    assert time.monotonic() - killed_at < spec.collective_timeout_s + 30
    assert [read_state(c).step for c in list_checkpoints(folder / "checkpoints")] == [5]

    result = launch(job_)  # what Prefect's retry of the task does
    assert (result.resumed_from_step, result.steps) == (5, 20)


def test_a_hung_rank_fails_the_others_after_the_collective_timeout(home, models, tmp_path):
    spec = TrainSpec(
        epochs=50, batch_size=4, max_length=16, logging_steps=1, checkpoint_steps=None,
        cpu_processes=2, collective_timeout_s=5,
    )  # fmt: skip
    task = "sequence-classification"
    job_ = job(home, task, models[task], prepared(tmp_path, task), spec, "sigstop")
    proc, folder = run_signalled(job_, "1:4:window:SIGSTOP")
    try:
        deadline = time.monotonic() + 120
        while not (folder / "error.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (folder / "error.json").exists(), "rank 0 waited forever for the stopped rank"
        hung_at = json.loads((folder / "signalled-1.json").read_text())["time"]
        failed_after = (folder / "error.json").stat().st_mtime - hung_at
        assert spec.collective_timeout_s - 1 <= failed_after < spec.collective_timeout_s + 15
        assert json.loads((folder / "error.json").read_text()).get("preempted") is None
    finally:
        for process in psutil.Process(proc.pid).children(recursive=True):
            process.kill()  # the stopped rank (what the orchestrator does to a hung pod)
        proc.wait(timeout=60)
