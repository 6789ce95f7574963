"""Is the Prefect server's scheduler creating runs? Its log says; read here, free of Prefect.

The scheduler is a background loop inside ``prefect server start``: the perpetual services
``schedule_deployments`` (every ``PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS``, 60 s by
default) and ``schedule_recent_deployments`` (every 5 s, for deployments just created or
changed), run by docket. When a cycle fails nothing reaches the API or the UI: the deployment
page still shows its schedule, the Upcoming tab stays empty, and the only trace is an ERROR
record with a traceback in the server's log (Prefect 3.8 on SQLAlchemy 2.1: ``InvalidRequestError:
Can't evaluate bulk DML statement`` on every cycle). ``scan`` finds such records written since
the server last started, so ``loraflow up`` and ``loraflow status`` can say so.

It reads Prefect's standard log format (``HH:MM:SS.mmm | LEVEL | logger - message``, the
default of ``prefect server start``); a JSON log format is not parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The docket tasks of Prefect's scheduler, and the logger its per-deployment errors go to.
SCHEDULER_TASKS = ("schedule_deployments", "schedule_recent_deployments")
SCHEDULER_LOGGER = "prefect.server.services.scheduler"
# Printed by every `prefect server start`: records before its last occurrence belong to an
# earlier server that wrote to the same (appended) log file.
START_MARKER = "Configure Prefect to communicate with the server with"
# Larger logs are read from their end only; a server restart writes the marker again anyway.
MAX_READ_BYTES = 16 * 1024 * 1024

_RECORD = re.compile(r"^(\d\d:\d\d:\d\d(?:\.\d+)?) \| ([A-Z]+)\s* \| (\S+) - (.*)$")
_DOCKET_TASK = re.compile(r"\]\s*(\w+)\(")


@dataclass(frozen=True)
class ServiceError:
    """One ERROR (or CRITICAL) record of the server's log."""

    time: str  # HH:MM:SS.mmm as logged
    logger: str  # e.g. docket.dependencies, prefect.server.services.scheduler, uvicorn.error
    source: str  # the failing docket task (schedule_deployments, ...) or else the logger
    error: str  # the exception line closing the traceback, else the record's message

    @property
    def scheduler(self) -> bool:
        return self.source in SCHEDULER_TASKS or self.logger.startswith(SCHEDULER_LOGGER)


@dataclass(frozen=True)
class ServerHealth:
    """The server's background errors since it started, from its log."""

    log: str
    errors: tuple[ServiceError, ...] = ()

    @property
    def scheduler_errors(self) -> tuple[ServiceError, ...]:
        return tuple(e for e in self.errors if e.scheduler)

    @property
    def other_errors(self) -> tuple[ServiceError, ...]:
        return tuple(e for e in self.errors if not e.scheduler)

    @property
    def scheduler_ok(self) -> bool:
        return not self.scheduler_errors

    def scheduler_line(self, upcoming: int | None = None) -> str:
        """One line on the scheduler: ok, or how often it failed, when last and with what.

        ``upcoming``: the server's count of runs the scheduler has created ahead, if known.
        """
        failed = self.scheduler_errors
        if not failed:
            ahead = "" if upcoming is None else f"{upcoming} upcoming scheduled run(s), "
            return (
                f"scheduler    ok: {ahead}no scheduler errors in {self.log} "
                "since the server started"
            )
        last = failed[-1]
        return (
            f"scheduler    FAILING: {len(failed)} failed cycle(s) since the server started, "
            f"last at {last.time} in {last.source}: {last.error} -- scheduled runs are not "
            f"being created; see {self.log} and docs/operations.md (Scheduler errors)"
        )

    def other_line(self) -> str | None:
        """One line on the server's other background or request errors, if any."""
        if not self.other_errors:
            return None
        last = self.other_errors[-1]
        sources = sorted({e.source for e in self.other_errors})
        return (
            f"server       {len(self.other_errors)} other error(s) since start "
            f"({', '.join(sources)}), last at {last.time}: {last.error}; see {self.log}"
        )


class FailureAlarm:
    """When to warn about a failing scheduler: at its first failure, then at most every
    ``repeat`` seconds while new failures keep coming (a failing cycle repeats every minute)."""

    def __init__(self, repeat: float = 600.0):
        self.repeat, self.failed, self.quiet_until = repeat, 0, float("-inf")

    def update(self, failed: int, now: float) -> bool:
        """``failed``: the failures counted so far; ``now``: a monotonic time. True: warn."""
        if failed <= self.failed or now < self.quiet_until:
            return False
        self.failed, self.quiet_until = failed, now + self.repeat
        return True


def since_last_start(text: str) -> str:
    """The part of an appended log written by the server that started last."""
    at = text.rfind(START_MARKER)
    return text if at < 0 else text[at:]


def parse_errors(text: str) -> tuple[ServiceError, ...]:
    """Every ERROR / CRITICAL record of ``text``, each with the exception that ended it."""
    errors: list[ServiceError] = []
    current: tuple[str, str, str, str] | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        time, logger, source, message = current
        errors.append(ServiceError(time, logger, source, _exception_line(body) or message))

    for line in text.splitlines():
        record = _RECORD.match(line)
        if record is None:
            body.append(line)
            continue
        close()
        time, level, logger, message = record.groups()
        current, body = None, []
        if level in ("ERROR", "CRITICAL"):
            current = (time, logger, _source(logger, message), message.strip())
    close()
    return tuple(errors)


def scan(text: str, log: str = "the Prefect server log") -> ServerHealth:
    """The errors the server logged since it last started (``log`` names it in messages)."""
    return ServerHealth(log, parse_errors(since_last_start(text)))


def scan_file(path: Path | str) -> ServerHealth:
    """``scan`` of a log file; a missing file has no errors."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - MAX_READ_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    return scan(text, str(path))


def _source(logger: str, message: str) -> str:
    if logger.startswith("docket"):
        task = _DOCKET_TASK.search(message)
        if task:
            return task.group(1)
    if logger.startswith(SCHEDULER_LOGGER):
        return "scheduler"
    return logger


def _exception_line(body: list[str]) -> str | None:
    """The last line of a traceback that names an exception (``module.Error: message``)."""
    if not any(line.startswith("Traceback (most recent call last)") for line in body):
        return None
    for line in reversed(body):
        if (
            line
            and not line[0].isspace()
            and not line.startswith(("Traceback", "During", "The above"))
        ):
            return line.strip()
    return None
