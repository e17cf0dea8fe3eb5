"""One-off dates written without an offset, read in the job's time zone.

``LocalDateTrigger`` is APScheduler's DateTrigger plus the wall-clock time as written, so the
admin and the preview can say when that time did not exist (spring gap) or happened twice
(clocks go back) and how it was resolved. Its pickled state is DateTrigger's plus ``wall``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apscheduler.triggers.date import DateTrigger

from scheduling.crontab import resolve_wall_time


class LocalDateTrigger(DateTrigger):
    def __init__(self, wall: dt.datetime, timezone: dt.tzinfo) -> None:
        super().__init__(run_date=resolve_wall_time(wall, timezone), timezone=timezone)
        self.wall = wall

    @property
    def zone(self) -> dt.tzinfo:
        """The zone the wall-clock time is read in (DateTrigger keeps it only in ``run_date``)."""
        zone = self.run_date.tzinfo
        assert zone is not None  # noqa: S101 -- resolve_wall_time returns an aware datetime
        return zone

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state["wall"] = self.wall
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.wall = state["wall"]
