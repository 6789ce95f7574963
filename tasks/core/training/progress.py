"""What a training run reports while it runs: step events, batched MLflow metrics, a bar, a plot.

The loop emits one ``StepEvent`` every ``logging_steps``. The metric log keeps them and writes
them to MLflow in batches *when a checkpoint is saved* (and at the end), and the checkpoint
itself carries the batch it flushes: MLflow then never holds a step that a resumed run will
train again, nor misses one, so the loss curve of a retried run is one clean line that
continues from the checkpoint. Live watching does not wait for that: the
same events drive the terminal bar and the Prefect progress artifact immediately.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.entities import Metric
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

METRICS = ("train_loss", "learning_rate", "grad_norm", "samples_per_s", "tokens_per_s")


@dataclass(frozen=True)
class StepEvent:
    """Progress of a run after optimizer step ``step`` of ``total``."""

    step: int
    total: int
    epoch: float
    train_loss: float
    learning_rate: float
    grad_norm: float
    samples_per_s: float
    tokens_per_s: float
    elapsed_s: float
    kind: str = "step"  # "step", "eval" (val_loss in train_loss), "checkpoint", "resume"

    @property
    def percent(self) -> float:
        return 100.0 * self.step / max(self.total, 1)

    def to_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[StepEvent], None]


class MetricLog:
    """Per-step metrics: kept in memory for the plot, written to MLflow in batches on flush."""

    def __init__(self, mlc=None, run_id: str | None = None):
        self.mlc, self.run_id = mlc, run_id
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.pending: list[Metric] = []

    def add(self, event: StepEvent) -> None:
        stamp = int(time.time() * 1000)
        names = ("val_loss",) if event.kind == "eval" else METRICS
        for name in names:
            value = float(getattr(event, "train_loss" if name == "val_loss" else name))
            self.history.setdefault(name, []).append((event.step, value))
            self.pending.append(Metric(name, value, stamp, event.step))

    def flush(self) -> None:
        if self.mlc is not None and self.pending:
            for start in range(0, len(self.pending), 1000):  # MLflow's per-call limit
                self.mlc.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending = []

    def unflushed(self) -> list[list]:
        """The pending points as JSON, saved inside the checkpoint being written."""
        return [[m.key, m.value, m.timestamp, m.step] for m in self.pending]

    def recover(self, unflushed: list[list]) -> None:
        """After a resume: write what the checkpoint's flush may not have, then read back.

        The checkpoint is on disk before its metrics reach MLflow, so a kill in between leaves
        points only in the checkpoint. Those newer than what MLflow holds per key are logged
        now; MLflow then holds every step up to the checkpoint exactly once.
        """
        if self.mlc is None:
            return
        names = {key for key, *_ in unflushed} | set(METRICS) | {"val_loss"}
        logged = {n: self.mlc.get_metric_history(self.run_id, n) for n in names}
        newest = {n: max((m.step for m in points), default=0) for n, points in logged.items()}
        missing = [Metric(k, v, t, s) for k, v, t, s in unflushed if s > newest[k]]
        self.pending = missing + self.pending
        self.flush()
        for name in ("train_loss", "val_loss"):
            points = [(m.step, m.value) for m in logged[name]]
            points += [(m.step, m.value) for m in missing if m.key == name]
            self.history[name] = sorted(points) + self.history.get(name, [])


def plot_loss_curve(history: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """train_loss (and val_loss when recorded) by optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name in ("train_loss", "val_loss"):
        points = history.get(name) or []
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name, marker="o" if len(points) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


class TerminalProgress:
    """A rich progress bar on stderr; silent when stderr is not a terminal (CI logs, workers)."""

    def __init__(self, description: str, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.description = description
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, event: StepEvent) -> None:
        if not self.console.is_terminal:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} samples/s"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                self.description, total=event.total, loss=float("nan"), rate=0.0
            )
        if event.kind == "step":
            self.progress.update(
                self.task,
                completed=event.step,
                loss=event.train_loss,
                rate=event.samples_per_s,
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
