"""Jobs, a calendar and a site's changes to them, for the export and import tests.

``declare()`` declares them (under the tests' empty registries, or at start-up of a process
through ``transfer_declared``); ``populate()`` stores them as a running site would have them:
synced, one overridden, one paused, one added from the admin, one whose function is undeclared.
"""

from __future__ import annotations

import datetime as dt

from scheduling import calendar, calendars, control, declarations, job, schedulable
from scheduling.store import JobStore
from scheduling.sync import sync, sync_calendars


def nightly_report() -> None:
    """Declared with @job."""


def refresh_cache() -> None:
    """Declared with @job."""


def report(kind: str, *, recipients: int = 1) -> None:
    """Schedulable from the admin, with arguments."""


def forgotten() -> None:
    """Stored by a script, declared nowhere."""


def declare() -> None:
    calendar("Closing days", dates=[(dt.date(2026, 12, 24), "Christmas Eve")], timezone="Europe/Berlin")
    job(cron="0 3 * * *", timezone="Europe/Berlin", id="nightly", calendars=["Closing days"])(nightly_report)
    job(interval={"minutes": 5}, id="refresh")(refresh_cache)
    schedulable(report, name="Report")


def populate() -> None:
    sync_calendars(calendars.registry.values(), declarations.registry.values())
    sync(JobStore(), declarations.registry.values())
    control.save_calendar(
        "Freeze",
        description="Release freeze",
        periods=[
            {
                "start": dt.datetime(2026, 12, 27, 18, tzinfo=dt.UTC),
                "end": dt.datetime(2026, 12, 28, 6, tzinfo=dt.UTC),
                "label": "year end",
            }
        ],
    )
    control.reschedule("refresh", interval={"minutes": 10})
    control.change("refresh", timeout=120)
    control.pause("nightly")
    control.add(
        "weekly-report",
        "tests.support.transfer_jobs:report",
        schedule={"cron": "0 8 * * 1", "timezone": "UTC"},
        name="Weekly report",
        args=["weekly"],
        kwargs={"recipients": 3},
        retries=2,
        calendars=["Freeze"],
        alert={"to": ["log"], "on": ["failure"]},
    )
    control.add("stray", "tests.support.transfer_jobs:forgotten", schedule={"interval": 3600})
