"""Exclusion calendars: named periods in which the jobs assigned to them do not run.

A calendar is a set of whole days (in its time zone: a day lasts from its midnight to the next,
23 or 25 hours across a clock change), date-time ranges, and optionally the rule "weekdays
only". Jobs name calendars in their run policy (``calendars``, see scheduling.policy); the
dispatcher records a fire that falls inside one *skipped*, with the calendar and the period,
and the next-runs preview leaves it out and says why.

Calendars are declared in code with :func:`calendar` (written to the database at scheduler
start by ``scheduling.sync.sync_calendars``, and read-only in the admin: the code would
overwrite an edit at the next start) or made in the admin. The rule itself, :func:`exclusion`,
is a pure function of an instant and the calendars' contents (:class:`CalendarRule`), which
``scheduling.store.calendar_rules`` reads. No models here: ``scheduling.calendar`` is imported
with the package, before the app registry is ready.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from scheduling import validation
from scheduling.schedules import ScheduleError, job_zone

MAX_LABEL_LENGTH = 100  # CalendarPeriod.label
MAX_PERIODS = 1000  # per calendar: all of them are read whenever a job of the calendar is due
WEEKEND = (5, 6)  # Saturday, Sunday


@dataclass(frozen=True)
class Period:
    """A whole ``day`` in the calendar's zone, or ``start`` (included) to ``end`` (excluded)."""

    label: str = ""
    day: dt.date | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def contains(self, moment: dt.datetime, zone: dt.tzinfo) -> bool:
        if self.day is not None:
            # Comparing local dates is exact, also when midnight itself falls in a clock change.
            return moment.astimezone(zone).date() == self.day
        return self.start is not None and self.end is not None and self.start <= moment < self.end

    def describe(self, zone: dt.tzinfo) -> str:
        """``2026-12-24`` or ``2026-12-24 18:00 to 2026-12-27 06:00 CET``, then the label: in the
        active language, for the CLI and the preview."""
        return self._describe(zone, english=False)

    def stored_text(self, zone: dt.tzinfo) -> str:
        """:meth:`describe` in English, whatever the active language: what a skipped run stores."""
        return self._describe(zone, english=True)

    def _describe(self, zone: dt.tzinfo, english: bool) -> str:
        if self.day is not None:
            when = f"{self.day:%Y-%m-%d}"
        elif self.start is not None and self.end is not None:
            start = f"{self.start.astimezone(zone):%Y-%m-%d %H:%M}"
            end = f"{self.end.astimezone(zone):%Y-%m-%d %H:%M %Z}"
            when = (
                f"{start} to {end}" if english else _("%(start)s to %(end)s") % {"start": start, "end": end}
            )
        else:  # neither: the table's check constraint refuses such a row
            when = "?"
        return f"{when} ({self.label})" if self.label else when


@dataclass(frozen=True)
class Exclusion:
    """Why a fire does not run: the calendar, and the period (or rule) it falls in, in English
    (``why``, what is stored) and in the active language when it was found (``shown``)."""

    calendar: str
    why: str
    shown: str = field(default="", compare=False)

    @property
    def reason(self) -> str:
        """``calendar "Holidays DE" (Christmas Eve)``, in English: for the log and the history."""
        return f'calendar "{self.calendar}" ({self.why})'

    @property
    def text(self) -> str:
        """:attr:`reason` in the active language, for the preview."""
        return _('calendar "%(calendar)s" (%(why)s)') % {
            "calendar": self.calendar,
            "why": self.shown or self.why,
        }

    @property
    def skip_message(self) -> str:
        """What the history row of a fire the calendar excluded says (in English)."""
        return f"Skipped: {self.reason}"


@dataclass(frozen=True)
class CalendarRule:
    """What a calendar excludes, as the dispatcher and the preview read it."""

    name: str
    zone: dt.tzinfo
    weekdays_only: bool = False
    periods: tuple[Period, ...] = ()

    def exclusion(self, moment: dt.datetime) -> Exclusion | None:
        """Why this calendar excludes the aware instant ``moment``, or None."""
        if self.weekdays_only and moment.astimezone(self.zone).weekday() in WEEKEND:
            return Exclusion(self.name, "weekend", _("weekend"))
        for period in self.periods:
            if period.contains(moment, self.zone):
                return Exclusion(
                    self.name,
                    period.label or period.stored_text(self.zone),
                    period.label or period.describe(self.zone),
                )
        return None


def exclusion(moment: dt.datetime, rules: Iterable[CalendarRule]) -> Exclusion | None:
    """The first of ``rules`` (a job's calendars, in its order) that excludes ``moment``."""
    for rule in rules:
        if (found := rule.exclusion(moment)) is not None:
            return found
    return None


# Code declarations -------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarDeclaration:
    name: str
    description: str = ""
    timezone: str = ""
    weekdays_only: bool = False
    periods: tuple[Period, ...] = ()


registry: dict[str, CalendarDeclaration] = {}


def calendar(
    name: str,
    *,
    dates: Iterable[dt.date | tuple[dt.date, str]] = (),
    periods: Iterable[tuple[dt.datetime, dt.datetime] | tuple[dt.datetime, dt.datetime, str]] = (),
    weekdays_only: bool = False,
    timezone: str | None = None,
    description: str = "",
) -> CalendarDeclaration:
    """Declare a calendar in code; jobs name it in ``@job(calendars=[...])``.

    ``dates`` are whole days (a ``date``, or ``(date, label)``) in the calendar's ``timezone``
    (default: the site's); ``periods`` are ``(start, end)`` or ``(start, end, label)``, the end
    excluded; naive datetimes are read in the calendar's zone. It is written to the database at
    scheduler start and cannot be edited in the admin. Declaring it twice differently raises.

    :raises scheduling.validation.InputError: naming the field that is wrong.
    """
    name = validation.calendar_name("name", name)
    validation.text("description", description)
    validation.flag("weekdays_only", weekdays_only)
    zone = check_zone(timezone)
    found = [_period("", item, None, None, zone) for item in dates]
    for item in periods:
        start, end, *label = item
        found.append(_period(label[0] if label else "", None, start, end, zone))
    if len(found) > MAX_PERIODS:
        raise validation.InputError(
            "periods", "too_many", _("a calendar holds at most %(max)s periods") % {"max": MAX_PERIODS}
        )
    declaration = CalendarDeclaration(name, description, timezone or "", weekdays_only, tuple(found))
    existing = registry.get(name)
    if existing is not None and existing != declaration:
        raise validation.InputError(
            "name", "duplicate", _("calendar %(name)r is declared twice, differently") % {"name": name}
        )
    registry[name] = declaration
    return declaration


def _period(label: str, day: object, start: object, end: object, zone: dt.tzinfo) -> Period:
    if isinstance(day, tuple):
        day, label = day
    label = validation.text("label", label, MAX_LABEL_LENGTH).strip()
    return Period(label, *validation.calendar_period(day, start, end, zone))


def check_zone(name: str | None) -> dt.tzinfo:
    """The zone a calendar names (None or blank: the site's); InputError for an unknown one."""
    if not name:
        return job_zone(None)
    validation.text("timezone", name, 64)
    try:
        return job_zone(name)
    except ScheduleError as exc:
        raise validation.InputError("timezone", "unknown_timezone", str(exc)) from None
