"""The ``schedule`` section: when and where an experiment retrains once it is deployed.

``loraflow deploy`` turns it into a Prefect deployment: the cron expression becomes the
deployment's schedule (the retraining cadence), ``work_pool`` picks the pool whose workers run
it, and ``retrain_on`` becomes deployment triggers (Prefect automations) on loraflow's events.
Checked at load time, so a typo in a cron field fails ``loraflow validate`` with the key path,
not a deploy call later.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from functools import cache
from typing import Literal

from cronsim import CronSim, CronSimError
from pydantic import Field, field_validator

from tasks.core.config.spec import Spec

RETRAIN_EVENTS = ("data.updated", "drift.detected", "model.stale")


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class ScheduleSpec(Spec):
    cron: str | None = Field(
        None,
        description="Retraining cadence as a 5-field cron expression (e.g. '0 3 * * 1': "
        "Mondays 03:00); None: no schedule, runs start by hand or by an event.",
    )
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")
    active: bool = Field(
        True,
        description="Whether the cron schedule is switched on when deployed (off: the "
        "deployment and its triggers exist, the cadence waits to be turned on in the UI).",
    )
    work_pool: Literal["cpu", "gpu"] = Field(
        "cpu", description="Prefect work pool whose workers run this experiment."
    )
    retrain_on: tuple[Literal[RETRAIN_EVENTS], ...] = Field(  # type: ignore[valid-type]
        ("data.updated", "drift.detected"),
        description="Events that start a retraining run (a deployment trigger each): "
        "'data.updated' for the dataset data.name, 'drift.detected' and 'model.stale' for the "
        "registered model (these two retrain with force).",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str | None) -> str | None:
        if cron is None:
            return None
        if len(cron.split()) != 5:
            raise ValueError(f"cron {cron!r} needs 5 fields: minute hour day month weekday")
        try:
            CronSim(cron, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"cron {cron!r} is not valid: {exc}") from None
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        if zone not in _timezones():
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name like 'Europe/Berlin'")
        return zone
