"""Reading a Prefect server's log for scheduler failures (tasks/core/ops/scheduler_health.py).

``data/prefect-3.8.8-server-sqlalchemy-2.1.9.log`` is the start of a real ``prefect server
start`` log (Prefect 3.8.8 on SQLAlchemy 2.1.9, a deployment with a schedule): the banner,
then the first failing cycles of both scheduler services (venv paths shortened).
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.ops import scheduler_health
from tasks.core.ops.scheduler_health import FailureAlarm, ServiceError, scan, scan_file

DATA = Path(__file__).parent / "data"
FAILING = (DATA / "prefect-3.8.8-server-sqlalchemy-2.1.9.log").read_text()
BULK_DML = (
    "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement; "
    "please supply a bulk_dml decorated function"
)
# What a healthy server writes at its default level (WARNING): the banner and nothing else.
HEALTHY = FAILING[: FAILING.index("13:47:08.068")]


def test_the_real_sqlalchemy_21_failure_is_found_with_its_exception():
    health = scan(FAILING, "logs/prefect-server.log")
    assert health.errors == (
        ServiceError("13:47:08.068", "docket.dependencies", "schedule_deployments", BULK_DML),
        ServiceError(
            "13:47:11.095", "docket.dependencies", "schedule_recent_deployments", BULK_DML
        ),
    )
    assert not health.scheduler_ok and health.other_errors == ()
    line = health.scheduler_line(upcoming=0)
    assert line.startswith("scheduler    FAILING: 2 failed cycle(s) since the server started")
    assert f"last at 13:47:11.095 in schedule_recent_deployments: {BULK_DML}" in line
    assert "see logs/prefect-server.log" in line


def test_a_healthy_server_log_reports_ok_with_the_runs_ahead():
    health = scan(HEALTHY, "logs/prefect-server.log")
    assert health.errors == () and health.scheduler_ok
    assert health.scheduler_line(upcoming=3) == (
        "scheduler    ok: 3 upcoming scheduled run(s), "
        "no scheduler errors in logs/prefect-server.log since the server started"
    )
    assert health.scheduler_line().startswith("scheduler    ok: no scheduler errors")
    assert health.other_line() is None


def test_errors_of_an_earlier_server_in_the_same_log_do_not_count():
    # `loraflow up` appends to the log: a restarted (fixed) server begins with a new banner.
    assert scan(FAILING + HEALTHY).errors == ()
    assert len(scan(HEALTHY + FAILING).errors) == 2


def test_other_errors_are_reported_apart_and_warnings_ignored():
    # The standard Prefect format of the server's other loggers (uvicorn, services).
    text = HEALTHY + "\n".join(
        [
            "14:02:03.100 | WARNING | prefect.server.services.late_runs - slow query",
            "14:02:04.200 | ERROR   | uvicorn.error - Exception in ASGI application",
            "Traceback (most recent call last):",
            '  File "app.py", line 1, in heartbeat',
            "sqlite3.OperationalError: database is locked",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            '  File "app.py", line 2, in heartbeat',
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked",
            "14:02:05.300 | ERROR   | prefect.server.services.scheduler - Error scheduling",
            "14:02:06.400 | INFO    | prefect.server - fine",
        ]
    )
    health = scan(text)
    assert health.other_errors == (
        ServiceError(
            "14:02:04.200",
            "uvicorn.error",
            "uvicorn.error",
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked",
        ),
    )
    # A record without a traceback keeps its message; the scheduler's own logger counts.
    assert health.scheduler_errors == (
        ServiceError(
            "14:02:05.300", "prefect.server.services.scheduler", "scheduler", "Error scheduling"
        ),
    )
    assert health.other_line().startswith("server       1 other error(s) since start (uvicorn")


def test_scan_file_reads_a_log_and_a_missing_one_is_clean(tmp_path):
    log = tmp_path / "prefect-server.log"
    assert scan_file(log).errors == ()
    log.write_text(HEALTHY + FAILING)
    health = scan_file(log)
    assert len(health.scheduler_errors) == 2 and health.log == str(log)


def test_a_huge_log_is_read_from_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduler_health, "MAX_READ_BYTES", len(FAILING.encode()))
    log = tmp_path / "prefect-server.log"
    log.write_text("x" * 5000 + "\n" + FAILING)
    assert len(scan_file(log).scheduler_errors) == 2


def test_the_alarm_warns_at_the_first_failure_then_at_most_every_repeat_seconds():
    alarm = FailureAlarm(repeat=600)
    assert [alarm.update(0, t) for t in (0, 10)] == [False, False]  # healthy: silent
    assert alarm.update(1, 20)  # the first failure
    assert [alarm.update(n, t) for n, t in ((2, 80), (11, 619))] == [False, False]
    assert alarm.update(12, 620)  # still failing ten minutes later
    assert not alarm.update(12, 5000)  # nothing new since: silent
