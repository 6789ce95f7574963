"""A training process SIGKILLed after its first checkpoint: Prefect's retry resumes the same run.

The whole pipeline runs under the real Prefect engine; training runs in a rank the training
agent forks (``loraflow-rank0``). A watcher thread kills that rank the moment a checkpoint exists,
the task fails, Prefect retries it, and the retry continues the same MLflow run from the
newest checkpoint: same run, configured number of steps, one unbroken loss curve.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from flows.finetune import finetune
from tasks.core.tracking import client
from tasks.core.training.checkpoints import list_checkpoints
from tasks.core.training.runs import IDENTITY_TAG
from tests.flows.conftest import settled_task_runs, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")
EPOCHS = 10
TOTAL_STEPS = EPOCHS * 48 // 2  # epochs x rows / batch size = 240
# The first checkpoint comes at step 40, so at least 200 steps (seconds, even on a loaded
# machine) remain after it: the watcher, polling every 10 ms, always kills mid-training.
CHECKPOINT_STEPS = 40


def trainer(process: psutil.Process) -> bool:
    """Whether ``process`` is a training rank (processes may exit while being looked at)."""
    try:
        return process.name().startswith("loraflow-rank")
    except psutil.Error:
        return False


class Killer(threading.Thread):
    """SIGKILLs the first training process once one of its checkpoints is on disk."""

    def __init__(self, work_dir: Path):
        super().__init__(daemon=True)
        self.work_dir = work_dir
        self.killed_at: float | None = None
        self.latest_step: int | None = None

    def checkpoints(self) -> list[Path]:
        roots = self.work_dir.glob("training/*/checkpoints")
        return sorted((p for root in roots for p in list_checkpoints(root)), key=lambda p: p.name)

    def run(self) -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            children = [
                p for p in psutil.Process(os.getpid()).children(recursive=True) if trainer(p)
            ]
            if children and self.checkpoints():
                children[0].send_signal(signal.SIGKILL)
                children[0].wait(30)
                self.killed_at = time.time()
                self.latest_step = int(self.checkpoints()[-1].name.split("-")[1])
                return
            time.sleep(0.01)


def test_killed_training_resumes_from_its_checkpoint_on_retry(home, mirrored, tmp_path):
    config = write_config(
        tmp_path,
        train={
            "epochs": EPOCHS,
            "batch_size": 2,
            "learning_rate": 0.01,
            "max_length": 16,
            "logging_steps": 1,
            "checkpoint_steps": CHECKPOINT_STEPS,
        },
    )
    killer = Killer(home.work_dir)
    killer.start()
    state = finetune(config_path=str(config), return_state=True)
    killer.join(5)
    assert state.is_completed(), state.message
    assert killer.killed_at is not None, "training finished before the watcher could kill it"
    resumed_from = killer.latest_step
    assert resumed_from >= CHECKPOINT_STEPS and resumed_from % CHECKPOINT_STEPS == 0

    # Prefect: the fine-tune task ran twice (the killed attempt, then the retry) and completed.
    runs = settled_task_runs(state.state_details.flow_run_id)
    (train_run,) = [run for run in runs if run.name.startswith("fine-tune")]
    assert train_run.run_count == 2 and train_run.state.is_completed()

    # MLflow: one training run, one model version, the configured number of steps.
    mlc = client(home.tracking_uri)
    experiment = mlc.get_experiment_by_name("tests").experiment_id
    (run,) = mlc.search_runs([experiment], filter_string=f"tags.`{IDENTITY_TAG}` != ''")
    run_id = run.info.run_id
    assert state.result()["run_id"] == run_id
    assert [str(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")] == ["1"]
    assert run.data.metrics["train_steps"] == TOTAL_STEPS
    assert run.data.tags["loraflow.resumed_from_step"] == str(resumed_from)

    # The loss curve: every step once, the killed attempt's up to the checkpoint, then the retry.
    curve = mlc.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in curve) == list(range(1, TOTAL_STEPS + 1))
    before = [m for m in curve if m.step <= resumed_from]
    after = [m for m in curve if m.step > resumed_from]
    assert (
        max(m.timestamp for m in before) < killer.killed_at * 1000 < min(m.timestamp for m in after)
    )
    assert not list(home.work_dir.glob("training/*/checkpoints/step-*"))  # cleaned up

    # The run says it resumed, and from which step: in its summary and in the flow run's log.
    assert state.result()["training"] == f"{TOTAL_STEPS} steps, resumed from step {resumed_from}"
    from tests.flows.test_sms_flow import flow_logs

    logs = flow_logs(state.state_details.flow_run_id)
    assert f"fine-tune: resumed from step {resumed_from} (its checkpoint)" in logs
