"""Cron as crontab(5) means it: Debian cron's day rule and daylight-saving rule.

APScheduler's CronTrigger needs both day-of-month and weekday to match when both are restricted,
and it walks wall-clock times with aware datetime arithmetic, which repeats or skips runs when
clocks move. ``CrontabTrigger`` keeps CronTrigger's fields (so its parser, its ``str()`` and its
pickled state stay the same) and replaces how fire times are found:

* **Day rule.** When day-of-month and weekday are both restricted, either may match ("0 0 1 * 1"
  is the 1st and every Monday) -- unless one of them starts with ``*``, then both must (Vixie and
  Debian cron read "*/2" as a restriction that is ANDed).
* **Wall-clock expressions** (minute and hour fields both not starting with ``*``: "30 2 * * *",
  "0,30 2 * * *") run once per wall-clock time. A time in the spring gap runs at the first instant
  after the jump; a time in the repeated hour runs at its first occurrence.
* **Elapsed-time expressions** (minute or hour starting with ``*``: "0 * * * *", "*/20 * * * *",
  "0 */2 * * *", every second) fire at every instant whose local wall clock matches, so they run in
  both occurrences of a repeated hour and not in a gap that never happened.

That is the rule of cronsim (healthchecks.io's evaluator), which the property tests use as the
oracle. The search runs over naive wall-clock times; only the mapping to instants knows about
time zones, so there is no aware-datetime arithmetic to go wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.cron import CronTrigger

UTC = dt.UTC
SECOND = dt.timedelta(seconds=1)
MICROSECOND = dt.timedelta(microseconds=1)
# Offsets are sampled this far apart when a search spans a long stretch of time: no zone changes
# its offset twice within six days, so a sample never steps over a there-and-back pair.
OFFSET_SAMPLE = dt.timedelta(days=6)
# Give up on an expression that matches nothing this many years ahead ("0 0 30 2 *").
SEARCH_YEARS = 60


@dataclass(frozen=True)
class Slot:
    """A fire time and the wall-clock time it stands for (they differ when a gap moved it)."""

    at: dt.datetime
    wall: dt.datetime


class CrontabTrigger(CronTrigger):
    """CronTrigger fields with crontab's day rule and Debian cron's daylight-saving rule.

    ``day_or`` and ``wall_clock`` are decided from the fields as the user wrote them (crontab
    weekday numbers are translated before APScheduler sees them, so "*/2" would no longer start
    with ``*``); they are part of the pickled state.
    """

    _last_day: tuple[dt.date, bool] | None = None  # see matches_day

    def __init__(
        self,
        *,
        day_or: bool | None = None,
        wall_clock: bool | None = None,
        expression: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self.expression = expression
        given = {name: str(value) for name, value in fields.items() if name in self.FIELD_NAMES}
        self.day_or = _day_or(given) if day_or is None else day_or
        self.wall_clock = self._is_wall_clock() if wall_clock is None else wall_clock
        self._prepare()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.update(day_or=self.day_or, wall_clock=self.wall_clock, expression=self.expression)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.day_or = state["day_or"]
        self.wall_clock = state["wall_clock"]
        self.expression = state.get("expression")
        self._prepare()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} ({str(self)[5:-1]}, day_or={self.day_or}, wall_clock={self.wall_clock})>"
        )

    # APScheduler's entry point ------------------------------------------------------------------

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        """The next fire, in UTC.

        In UTC because Python compares and subtracts two datetimes of the same tzinfo by their
        wall clocks, ignoring ``fold``: APScheduler's ``next_run_time <= now`` would call 02:10
        CET (the second 02:10) earlier than 02:50 CEST, forty minutes before it is.
        """
        if previous_fire_time is not None:
            slot = self.next_slot(previous_fire_time)
        else:
            start = max(now, self.start_date) if self.start_date else now
            slot = self.next_slot(start - MICROSECOND)
        if slot is None:
            return None
        return self.jittered(slot.at)

    def jittered(self, slot: dt.datetime) -> dt.datetime:
        """The slot plus a random delay in [0, jitter], kept before the next slot.

        The delay is added in UTC: added to an aware local time in a repeated hour (fold=1) it
        would land in the first occurrence, an hour earlier than the previous fire.
        """
        window = self.jitter_window(slot)
        if not window:
            return slot.astimezone(UTC)
        return slot.astimezone(UTC) + dt.timedelta(seconds=random.uniform(0, window))  # noqa: S311 -- spreading load, not a secret

    def jitter_window(self, slot: dt.datetime) -> float:
        """How much jitter the slot may get: ``jitter``, capped to end before the next slot."""
        if not self.jitter:
            return 0.0
        window = float(self.jitter)
        following = self.next_slot(slot)
        if following is not None:
            gap = (following.at.astimezone(UTC) - slot.astimezone(UTC)).total_seconds() - 1e-6
            window = min(window, gap)
        if self.end_date is not None:
            window = min(window, (self.end_date.astimezone(UTC) - slot.astimezone(UTC)).total_seconds())
        return max(window, 0.0)

    # Fire times ---------------------------------------------------------------------------------

    def next_slot(self, after: dt.datetime) -> Slot | None:
        """The first fire strictly after ``after`` (an aware datetime), without jitter."""
        slot = self._wall_clock_after(after) if self.wall_clock else self._elapsed_after(after)
        if slot is None or (
            self.end_date is not None and slot.at.astimezone(UTC) > self.end_date.astimezone(UTC)
        ):
            return None
        return slot

    def _wall_clock_after(self, after: dt.datetime) -> Slot | None:
        cursor = after.astimezone(self.timezone).replace(tzinfo=None)
        while True:
            wall = self.next_match(cursor)
            if wall is None:
                return None
            moment = resolve_wall_time(wall, self.timezone)
            # A time read back from the second occurrence of a repeated hour maps to its first
            # occurrence, before ``after``: that wall-clock time has had its run.
            if moment.astimezone(UTC) > after.astimezone(UTC):
                return Slot(moment, wall)
            cursor = wall

    def _elapsed_after(self, after: dt.datetime) -> Slot | None:
        # Walk offset by offset: within one UTC offset, wall time and elapsed time move together,
        # so the next wall-clock match is the next fire unless the offset changes first.
        moment = after.astimezone(UTC)
        inclusive = False
        while True:
            offset = offset_at(self.timezone, moment)
            wall = self.next_match((moment + offset).replace(tzinfo=None), inclusive=inclusive)
            if wall is None:
                return None
            candidate = (wall - offset).replace(tzinfo=UTC)
            change = first_offset_change(self.timezone, moment, candidate, offset)
            if change is None:
                local = candidate.astimezone(self.timezone)
                return Slot(local, local.replace(tzinfo=None))
            moment, inclusive = change, True

    # Wall-clock matching ------------------------------------------------------------------------

    def next_match(self, after: dt.datetime, inclusive: bool = False) -> dt.datetime | None:
        """The first naive wall-clock time (whole seconds) after ``after`` that the fields match."""
        moment = after.replace(microsecond=0)
        if not inclusive or moment < after:
            moment += SECOND
        last_year = after.year + SEARCH_YEARS
        while moment.year <= last_year:
            day = moment.date()
            if not self.matches_day(day):
                moment = dt.datetime.combine(self._next_day_candidate(day), dt.time())
                continue
            hour = _first_at_least(self._hours, moment.hour)
            if hour is None:
                moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
                continue
            if hour != moment.hour:
                moment = dt.datetime.combine(day, dt.time(hour))
            minute = _first_at_least(self._minutes, moment.minute)
            if minute is None:
                moment = moment.replace(minute=0, second=0) + dt.timedelta(hours=1)
                continue
            if minute != moment.minute:
                moment = moment.replace(minute=minute, second=0)
            second = _first_at_least(self._seconds, moment.second)
            if second is None:
                moment = moment.replace(second=0) + dt.timedelta(minutes=1)
                continue
            return moment.replace(second=second)
        return None

    def matches_day(self, day: dt.date) -> bool:
        # The last day asked about, remembered: a job firing every second or minute asks about
        # the same day at every fire, and five field matches cost more than the rest of the search.
        if self._last_day is not None and self._last_day[0] == day:
            return self._last_day[1]
        matches = self._matches_day(day)
        self._last_day = (day, matches)
        return matches

    def _matches_day(self, day: dt.date) -> bool:
        moment = dt.datetime.combine(day, dt.time())
        for name in ("year", "month", "week"):
            if not _field_matches(self._field[name], moment):
                return False
        by_date = _field_matches(self._field["day"], moment)
        by_weekday = _field_matches(self._field["day_of_week"], moment)
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)

    def _next_day_candidate(self, day: dt.date) -> dt.date:
        # Skip whole months (and years) that cannot match, so "0 0 29 2 *" does not test each day.
        moment = dt.datetime.combine(day, dt.time())
        if not _field_matches(self._field["year"], moment):
            return dt.date(day.year + 1, 1, 1)
        if not _field_matches(self._field["month"], moment):
            return dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
        return day + dt.timedelta(days=1)

    def _prepare(self) -> None:
        self._field = {field.name: field for field in self.fields}
        self._last_day = None
        self._hours = _values(self._field["hour"], "hour", 24)
        self._minutes = _values(self._field["minute"], "minute", 60)
        self._seconds = _values(self._field["second"], "second", 60)

    def _is_wall_clock(self) -> bool:
        return not (
            str(self._field_of("minute")).startswith("*") or str(self._field_of("hour")).startswith("*")
        )

    def _field_of(self, name: str) -> Any:
        return next(field for field in self.fields if field.name == name)


def offset_at(zone: dt.tzinfo, moment: dt.datetime) -> dt.timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # noqa: S101 -- an aware datetime in a ZoneInfo always has one
    return offset


def first_offset_change(
    zone: dt.tzinfo, start: dt.datetime, end: dt.datetime, offset: dt.timedelta
) -> dt.datetime | None:
    """The first whole second in (start, end] whose UTC offset in ``zone`` is not ``offset``."""
    low = start
    while low < end:
        high = min(low + OFFSET_SAMPLE, end)
        if offset_at(zone, high) != offset:
            low_s, high_s = int(low.timestamp()), int(high.timestamp())
            while high_s - low_s > 1:
                middle = (low_s + high_s) // 2
                if offset_at(zone, dt.datetime.fromtimestamp(middle, UTC)) == offset:
                    low_s = middle
                else:
                    high_s = middle
            return dt.datetime.fromtimestamp(high_s, UTC)
        low = high
    return None


def resolve_wall_time(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A naive wall-clock time as an instant: the first occurrence, or the end of a gap.

    In the spring gap the run goes to the first minute that exists after it (03:00 for 02:30 in
    Europe/Berlin); in the repeated hour, ``fold=0`` is the first occurrence.
    """
    moment = wall.replace(tzinfo=zone, fold=0)
    if exists(moment):
        return moment
    probe = wall.replace(second=0, microsecond=0)
    while not exists(probe.replace(tzinfo=zone)):
        probe += dt.timedelta(minutes=1)
    return probe.replace(tzinfo=zone)


def exists(moment: dt.datetime) -> bool:
    """False for an aware local time inside a spring gap (it does not survive a round trip)."""
    return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) == moment.replace(
        tzinfo=None
    )


def is_ambiguous(wall: dt.datetime, zone: dt.tzinfo) -> bool:
    """True for a naive wall-clock time that happens twice (the hour repeated when clocks go back)."""
    return wall.replace(tzinfo=zone, fold=0).utcoffset() != wall.replace(
        tzinfo=zone, fold=1
    ).utcoffset() and exists(wall.replace(tzinfo=zone))


def _day_or(fields: dict[str, str]) -> bool:
    day, weekday = fields.get("day"), fields.get("day_of_week")
    return bool(day and weekday and not day.startswith("*") and not weekday.startswith("*"))


def _field_matches(field: Any, moment: dt.datetime) -> bool:
    return bool(field.get_next_value(moment) == field.get_value(moment))


def _values(field: Any, name: str, size: int) -> tuple[int, ...]:
    return _matching(name, str(field), size)


# Every trigger built or unpickled needs these (a first start with 10,000 declared jobs did 1.4
# million field matches for them); they depend on the field's text alone, and sites use few.
@functools.lru_cache(maxsize=1024)
def _matching(name: str, expression: str, size: int) -> tuple[int, ...]:
    """The hours, minutes or seconds (``name``) that an expression of that field matches."""
    field = CronTrigger.FIELDS_MAP[name](name, expression)
    base = dt.datetime(2000, 1, 1)
    return tuple(value for value in range(size) if _field_matches(field, _with(base, name, value)))


def _with(moment: dt.datetime, name: str, value: int) -> dt.datetime:
    parts: dict[str, Any] = {name: value}
    return moment.replace(**parts)


def _first_at_least(values: tuple[int, ...], floor: int) -> int | None:
    return next((value for value in values if value >= floor), None)
