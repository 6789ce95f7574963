"""Warm training processes: started before their job, handed it, or killed when not needed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from tasks.core.catalog.mirror import import_folder
from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.tracking import client, ensure_experiment
from tasks.core.training import launcher, warm
from tasks.core.training.runs import TrainJob
from tests.tiny import sentiment_rows


def tiny_job(home, tiny_bert_dir, tmp_path, spec: TrainSpec) -> TrainJob:
    revision = import_folder(tiny_bert_dir, "loraflow-test/tiny-bert", home.hf_hub_cache).revision
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    rows = sentiment_rows(16, 1)
    split = Dataset.from_dict(
        {"text": [t for _, t in rows], "label": [y for y, _ in rows]}, features
    )
    DatasetDict({"train": split, "eval": split}).save_to_disk(str(tmp_path / "prepared"))
    mlc = client(home.tracking_uri)
    run_id = mlc.create_run(ensure_experiment(mlc, "warm", home.mlflow_artifacts)).info.run_id
    return TrainJob(
        repo_id="loraflow-test/tiny-bert",
        revision=revision,
        prepared_path=str(tmp_path / "prepared"),
        labels=["neg", "pos"],
        lora=LoraSpec(r=2).model_dump(mode="json"),
        train=spec.model_dump(mode="json"),
        tracking_uri=home.tracking_uri,
        run_id=run_id,
        work_dir=str(home.work_dir),
        cache_dir=str(home.hf_hub_cache),
        identity="warm",
    )


def test_launch_hands_its_job_to_the_warm_process(home, tiny_bert_dir, tmp_path, monkeypatch):
    spec = TrainSpec(epochs=1, batch_size=4, max_length=16, cpu_processes=1)
    started = warm.prewarm(spec.model_dump(mode="json"), tmp_path / "warm")
    job = tiny_job(home, tiny_bert_dir, tmp_path, spec)

    def no_new_process(*args, **kwargs):
        raise AssertionError("launch started a process although a warm one was waiting")

    monkeypatch.setattr(launcher.subprocess, "Popen", no_new_process)
    result = launcher.launch(job)
    assert result.steps == 4 and result.run_id == job.run_id
    assert started.proc.returncode == 0 and not started.handoff.exists()
    assert warm.adopt(Path("job.json"), 0, 1) is None  # handed over once; none waits now


def test_another_layout_gets_its_own_processes_and_the_warm_ones_are_killed(tmp_path):
    started = warm.prewarm(TrainSpec(cpu_processes=1).model_dump(mode="json"), tmp_path)
    assert warm.adopt(tmp_path / "job.json", 0, 2) is None
    assert started.proc.returncode == -9 and not started.handoff.exists()


def test_release_kills_the_launcher_and_its_workers_at_once(tmp_path):
    """A multi-process layout (torchrun + 2 workers), released while it still imports."""
    started = warm.prewarm(TrainSpec(cpu_processes=2).model_dump(mode="json"), tmp_path)
    deadline = time.monotonic() + 60
    parent = psutil.Process(started.proc.pid)
    while len(parent.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = parent.children()
    assert len(workers) == 2
    begun = time.monotonic()
    warm.release()
    assert time.monotonic() - begun < 5
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
    assert started.proc.poll() is not None and not started.handoff.exists()


@pytest.mark.parametrize("handed", [True, False])
def test_a_waiting_process_takes_the_handoff_or_leaves_with_its_parent(tmp_path, handed):
    handoff = tmp_path / "handoff"
    if handed:
        handoff.write_text(str(tmp_path / "job.json"))
        assert warm.wait_for_job(handoff, "") == tmp_path / "job.json"
        return
    gone = subprocess.Popen(["true"])
    gone.wait()
    marker = f"{gone.pid}:{time.time() - 3600}"  # that process is gone
    begun = time.monotonic()
    assert warm.wait_for_job(handoff, marker) is None
    assert time.monotonic() - begun < 5


def test_inputs_seen_complete_before_get_no_warm_processes(tmp_path):
    """`run` skips the warm start when the same config and data files completed a run in this
    home (its training is then a cache hit); a touched data file or another config is new."""
    data = tmp_path / "train.tsv"
    data.write_text("text\tlabel\na\t0\n")
    folder = tmp_path / "warm"
    key = warm.inputs_key("config-a", [data])
    assert not warm.seen(folder, key)
    warm.remember(folder, key)
    assert warm.seen(folder, key) and warm.seen(folder, warm.inputs_key("config-a", [data]))
    assert not warm.seen(folder, warm.inputs_key("config-b", [data]))
    data.write_text("text\tlabel\nb\t1\n")  # the data changed: training will run
    assert not warm.seen(folder, warm.inputs_key("config-a", [data]))
