"""Work beside training (the base model's scoring) starts once this process only waits for the
training, and never hangs a flow whose training failed (tasks/common.py ``TrainingWait``)."""

from __future__ import annotations

import threading
import uuid

import pytest

from flows import train_deployment
from tasks.common import training_wait


@pytest.fixture
def flow_run_id(monkeypatch) -> str:
    run_id = str(uuid.uuid4())
    monkeypatch.setattr(train_deployment.flow_run_context, "get_id", lambda: run_id)
    return run_id


def test_one_wait_per_flow_run_and_it_lets_every_waiter_go():
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert training_wait(a) is training_wait(a) and training_wait(a) is not training_wait(b)
    released = []
    waiter = threading.Thread(target=lambda: released.append(training_wait(a).wait(30)))
    waiter.start()
    assert not training_wait(a).wait(0.05)
    training_wait(a).now()
    waiter.join(5)
    assert released == [True] and not training_wait(a).failed
    assert not training_wait(b).wait(0)  # another flow run's is untouched


def test_a_failed_training_stage_lets_the_waiting_work_go_and_says_it_failed(
    flow_run_id, monkeypatch
):
    def fails(*args):
        raise RuntimeError("training process exited with status 1")

    monkeypatch.setattr(train_deployment, "_train", fails)
    with pytest.raises(RuntimeError):
        train_deployment.train_stage(None, None)
    waiting = training_wait(flow_run_id)
    assert waiting.wait(0) and waiting.failed and waiting.over


def test_a_returning_training_stage_lets_the_waiting_work_go(flow_run_id, monkeypatch):
    monkeypatch.setattr(train_deployment, "_train", lambda *args: "result")
    assert train_deployment.train_stage(None, None) == "result"
    waiting = training_wait(flow_run_id)
    assert waiting.wait(0) and not waiting.failed and waiting.over


def test_processes_started_is_not_over():
    """``now`` (the training processes run) lets the base's scoring start on one thread;
    only ``end`` (the stage returned) says the training is over."""
    waiting = training_wait(str(uuid.uuid4()))
    waiting.now()
    assert waiting.wait(0) and not waiting.over
    waiting.end()
    assert waiting.over and not waiting.failed


def test_the_base_scoring_takes_every_core_once_the_training_is_over():
    """After each batch the base's scoring (one thread beside the training) checks whether
    the training stage is over; from then on its batches run on the process's threads (the
    evaluation waits for this tail, and the other cores were idle: ~2 s on the quickstart).
    The thread count is the scoring thread's own: the caller's stays as it was."""
    import torch

    from tasks.base_scores import _every_core_once_over

    waiting, seen = training_wait(str(uuid.uuid4())), []

    def scoring_thread() -> None:
        torch.set_num_threads(1)
        _every_core_once_over(waiting, 3, "base", 128, 872)
        seen.append(torch.get_num_threads())
        waiting.end()
        _every_core_once_over(waiting, 3, "base", 256, 872)
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    thread = threading.Thread(target=scoring_thread)
    thread.start()
    thread.join(30)
    assert seen == [1, 3] and torch.get_num_threads() == before
