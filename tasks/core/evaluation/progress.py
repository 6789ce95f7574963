"""Scoring progress on a terminal: one bar per model scored (candidate, champion, base).

Evaluating a large eval split with three models takes a while on a CPU; without a bar the
pipeline looks hung after training. The bar is transient and drawn only on a terminal
(captured output and workers get the one summary line per model the stage logs instead).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ScoringProgress:
    """``(role, done, total)`` -> a bar per role; silent when stderr is not a terminal."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}

    def __call__(self, role: str, done: int, total: int) -> None:
        if not self.console.is_terminal:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]evaluate {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        if role not in self.tasks:
            self.tasks[role] = self.progress.add_task(role, total=total)
        self.progress.update(self.tasks[role], completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
