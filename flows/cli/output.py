"""What every command prints with: the consoles and the one error line.

Errors reach the user as one line, ``error: <what and where>``, on stderr; ``main`` in
``app.py`` turns every ``LoraflowError`` into that line and its class's exit code, so commands
raise errors instead of printing them.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

console = Console()
err = Console(stderr=True)


def error_line(message: str) -> None:
    """One line on stderr; the message is plain text (it may hold '[eval]', not markup)."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def warning_line(message: str) -> None:
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True)
