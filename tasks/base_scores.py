"""Stage 4b - the base model's eval scores, computed while the training processes run.

The evaluation compares the candidate with the base it was trained from. The base does not
depend on the training, and its scores are cached per (base repo@sha, eval texts after the
run's preprocessing, max_length, precision; ``tasks/core/evaluation/base_cache.py``). This
task fills that cache from a thread of the pipeline's process, which only waits while the
training processes compute; the evaluation then reads the scores instead of loading and
running the base on its critical path. It never fails the pipeline: on an error the
evaluation scores the base itself, as it always could.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil
from prefect import get_run_logger, task
from prefect.runtime import flow_run

from tasks.common import at_low_priority, training_wait
from tasks.core.config.evaluation import EvalSpec, GateSpec
from tasks.core.config.train import TrainSpec
from tasks.core.data.prepare import load_prepared
from tasks.core.data.preprocess import Preprocessing
from tasks.core.data.report import DataReport
from tasks.core.evaluation.base_cache import early_scoring_skipped
from tasks.core.home import Home
from tasks.core.ops.preload import settle
from tasks.core.training.refs import ModelRef
from tasks.gate import base_scorer, eval_precision

# One intra-op thread (OpenMP threads spinning beside the training processes slow them), at the
# lowest priority: below the training processes, which the training agent forks in this
# process's session, so nice ranks them even under Linux's autogroup scheduling (torchrun's
# ranks had sessions of their own, which shared CPU with this one as equals: the scoring took
# from the training as much as it saved the evaluation; docs/benchmarks.md).
THREADS = 1


@dataclass(frozen=True)
class BaseScoring:
    compute_s: float  # loading and scoring the base (0: already cached, or skipped)
    finished_at: float  # epoch seconds
    note: str = ""  # why it was skipped or failed ("" when it ran or was cached)


# Not cached by Prefect: the scores' own cache is the file; a skip or failure is not kept. No
# timeout: the task is submitted, so it runs in a worker thread, where Prefect cannot interrupt
# it (it warned so on every run); it waits for the training stage, which has its own timeout
# and releases the wait when it fails, and then scores one eval split.
@task(name="score-base", task_run_name="score base {repo_id} while training runs")
def score_base_during_training(
    repo_id: str,
    revision: str,
    parameters: int | None,
    data: DataReport,
    spec: EvalSpec,
    gates: GateSpec,
    train: TrainSpec,
    home: Home,
) -> BaseScoring:
    rule = (gates.base_model.score, train.task, train.launcher, parameters)
    skipped = early_scoring_skipped(*rule)
    if skipped is not None:
        return _skipped(skipped)
    waiting = training_wait(str(flow_run.get_id() or ""))
    return _beside_training(waiting, rule, ModelRef(repo_id, revision), data, spec, train, home)


def _beside_training(waiting, rule, ref: ModelRef, data, spec, train, home) -> BaseScoring:
    waiting.wait()  # until the training processes run and this process only waits for them
    if waiting.failed:
        return _skipped("training failed: the evaluation will not run")
    skipped = early_scoring_skipped(*rule, psutil.virtual_memory().available)
    if skipped is not None:  # memory as it is now, beside the training processes
        return _skipped(skipped)
    settle()  # the evaluation's preload, started with the training: its imports are ours too
    started = time.perf_counter()
    try:
        computed = at_low_priority(_score, ref, data, spec, train, home, waiting, name="score-base")
    except Exception as exc:  # the evaluation scores the base itself
        get_run_logger().warning("scoring the base during training failed", exc_info=True)
        return BaseScoring(0.0, time.time(), f"failed: {type(exc).__name__}: {exc}"[:300])
    seconds = time.perf_counter() - started if computed else 0.0
    if computed:
        get_run_logger().info(
            "base %s@%s scored in %.1f s while training ran", ref.repo_id, ref.revision[:12],
            seconds,
        )  # fmt: skip
    return BaseScoring(seconds, time.time())


def _skipped(why: str) -> BaseScoring:
    get_run_logger().info("base not scored while training runs: %s", why)
    return BaseScoring(0.0, time.time(), why)


def _score(
    ref: ModelRef, data: DataReport, spec: EvalSpec, train: TrainSpec, home: Home, waiting
) -> bool:
    """Fill the cache the evaluation reads; False when it already held these scores (then
    without importing the scoring code: a cached re-run waits for this task)."""
    import torch

    precision = eval_precision(spec)
    recorded = data.preprocessing or None
    preprocessing = Preprocessing.from_dict(recorded) if recorded else None
    labels, cache_dir = list(data.label_names), Path(home.hf_hub_cache)

    def load():  # on a miss only
        from tasks.core.evaluation.scoring import pinned_base_classifier

        return pinned_base_classifier(ref, labels, cache_dir, None, precision.dtype)

    scorer = base_scorer(ref, labels, load, home, precision, preprocessing)
    texts = list(load_prepared(data.prepared_path)["eval"]["text"])
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    scorer.on_progress = partial(_every_core_once_over, waiting, before)
    try:
        scorer.predict(texts, spec.batch_size, train.max_length)
    finally:
        torch.set_num_threads(before)
    return not scorer.hit


def _every_core_once_over(waiting, threads: int, *progress) -> None:
    """After a batch: once the training stage is over, the rest of the split on ``threads``
    (the process's own count) instead of one. The training's end left the other cores idle
    while the evaluation waited for this tail (~2 s of one core on the quickstart)."""
    import torch

    if waiting.over and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # this thread's OpenMP team: its next batch
