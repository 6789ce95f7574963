"""Training in a child process: the command line, and SIGTERM -> checkpoint -> clean stop."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from tasks.core.catalog.mirror import import_folder
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.errors import TrainingProcessFailed
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training.checkpoints import list_checkpoints, read_state
from tasks.core.training.launcher import command, cpu_processes, launch
from tasks.core.training.runs import TrainJob, job_dir
from tests.tiny import sentiment_rows


def test_child_command_per_hardware():
    module = ["-m", "tasks.core.training.launcher", "job.json"]
    agent = [sys.executable, "-m", "tasks.core.training.agent", "--procs"]
    assert command(Path("job.json"), gpus=0) == [*agent, "1", "job.json"]
    assert command(Path("job.json"), gpus=0, cpu_procs=2) == [*agent, "2", "job.json"]
    assert command(None, gpus=0, cpu_procs=2) == [*agent, "2"]  # started early: job on stdin
    assert command(Path("job.json"), gpus=1, cpu_procs=4) == [sys.executable, *module]
    multi_gpu = command(Path("job.json"), gpus=4)
    assert multi_gpu[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert multi_gpu[4:6] == ["--num_processes", "4"] and multi_gpu[-3:] == module


def test_cpu_processes_follow_the_batch_and_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert cpu_processes({"batch_size": 8}) == 1  # 8 examples: one process keeps them all
    assert cpu_processes({"batch_size": 32}) == min(cores, 4)
    assert cpu_processes({"batch_size": 8, "cpu_processes": 3}) == 3


def test_sigterm_saves_the_current_step_and_stops(home, tiny_bert_dir, tmp_path):
    revision = import_folder(tiny_bert_dir, "loraflow-test/tiny-bert", home.hf_hub_cache).revision
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    rows = sentiment_rows(48, 1)
    split = Dataset.from_dict(
        {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features
    )
    DatasetDict({"train": split, "eval": split}).save_to_disk(str(tmp_path / "prepared"))
    mlc = client(home.tracking_uri)
    run_id = mlc.create_run(ensure_experiment(mlc, "launcher", home.mlflow_artifacts)).info.run_id
    spec = TrainSpec(
        epochs=50, batch_size=2, max_length=16, logging_steps=1, checkpoint_steps=None
    )  # 1,200 steps: far more than run before the signal lands
    job = TrainJob(
        repo_id="loraflow-test/tiny-bert",
        revision=revision,
        prepared_path=str(tmp_path / "prepared"),
        labels=["neg", "pos"],
        lora=LoraSpec(r=4).model_dump(mode="json"),
        train=spec.model_dump(mode="json"),
        tracking_uri=home.tracking_uri,
        run_id=run_id,
        work_dir=str(home.work_dir),
        cache_dir=str(home.hf_hub_cache),
        identity="sigterm",
    )
    signalled, started = [], []

    def stop_after_first_step(event):
        assert started == ["child running"]  # told before any event: this process only waits
        if event.kind == "step" and not signalled:
            (agent,) = [  # it forwards the signal to the rank it forked
                p
                for p in psutil.Process().children()
                if "tasks.core.training.agent" in " ".join(p.cmdline())
            ]
            agent.send_signal(signal.SIGTERM)
            signalled.append(event.step)

    with pytest.raises(TrainingProcessFailed, match="exited with status 143.*SIGTERM after step"):
        launch(
            job, on_event=stop_after_first_step, on_start=lambda: started.append("child running")
        )
    (checkpoint,) = list_checkpoints(job_dir(home.work_dir, "sigterm") / "checkpoints")
    stopped_at = read_state(checkpoint).step
    assert signalled[0] <= stopped_at < 1200  # the step it was in, not a cadence multiple
    error = json.loads((job_dir(home.work_dir, "sigterm") / "error.json").read_text())
    assert error["preempted"] is True
    curve = [m.step for m in mlc.get_metric_history(run_id, "train_loss")]
    assert sorted(curve) == list(range(1, stopped_at + 1))  # flushed with the checkpoint
