"""Schedules: turning declarations and admin input into APScheduler triggers, and triggers into words.

A schedule *spec* is a small JSON-able dict with exactly one of ``cron``, ``interval`` or ``date``
and optionally ``timezone`` and ``jitter``. Specs are what the code declares and what the
database keeps as the declaration, so a job can always be reset to it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import pathlib
import re
import zoneinfo
from typing import Any

import cron_descriptor
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options
from django.conf import settings
from django.utils import formats, timezone, translation
from django.utils.dates import MONTHS, WEEKDAYS
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from scheduling.crontab import CrontabTrigger
from scheduling.dates import LocalDateTrigger
from scheduling.interval import ElapsedIntervalTrigger

CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
KINDS = ("cron", "interval", "date")

CRONTAB_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Crontab counts weekdays from Sunday (0 or 7); APScheduler's day_of_week counts from Monday.
# Numbers are translated through names so "0 3 * * 0" means Sunday, as every crontab user expects.
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
APSCHEDULER_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (APScheduler field, lowest, highest, names) in crontab order; weekday 7 is Sunday again.
CRONTAB_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, MONTH_NAMES),
    ("day_of_week", 0, 7, WEEKDAY_NAMES),
)


class ScheduleError(ValueError):
    """A schedule that cannot be built; the message says which part is wrong."""


class WallClockCronTrigger(CronTrigger):
    """The cron trigger of earlier versions, kept so jobs stored with it still load and keep its meaning.

    New schedules get ``CrontabTrigger`` (crontab's day rule, Debian cron's DST rule); a job stored
    with this one keeps its old meaning until it is edited or reset, and the admin flags it when
    the meanings differ (see ``scheduling.legacy``).

    When clocks go back, an hour of wall-clock times happens twice; APScheduler's CronTrigger
    fires in both (a daily 02:30 job runs twice in Europe/Berlin that night). This one skips the
    repeat. When clocks go forward, APScheduler already runs a daily job whose time falls in the
    skipped hour once, an hour later by the wall clock; a job due several times a day skips the
    slot that does not exist.
    """

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        fire = super().get_next_fire_time(previous_fire_time, now)
        while fire and previous_fire_time and self._wall_clock(fire) == self._wall_clock(previous_fire_time):
            fire = super().get_next_fire_time(fire, fire)
        return fire

    def _wall_clock(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self.timezone).replace(tzinfo=None)


def normalize_spec(
    *,
    cron: str | dict[str, Any] | None = None,
    interval: dt.timedelta | int | float | dict[str, Any] | None = None,
    date: dt.datetime | str | None = None,
    timezone_name: str | None = None,
    jitter: int | None = None,
) -> dict[str, Any]:
    """Collect the user's keyword arguments into a JSON-able spec and validate it."""
    given = {k: v for k, v in (("cron", cron), ("interval", interval), ("date", date)) if v is not None}
    if len(given) != 1:
        raise ScheduleError(_("give exactly one of cron=, interval= or date="))
    kind, value = next(iter(given.items()))
    spec: dict[str, Any] = {}
    if kind == "interval":
        spec["interval"] = _interval_dict(value)
    elif kind == "date":
        # A date without an offset stays naive: it is read in the job's time zone when built.
        spec["date"] = _parse_date(value).isoformat()
    elif isinstance(value, dict):
        spec["cron"] = {str(k): str(v) for k, v in value.items()}
    else:
        spec["cron"] = str(value).strip()
    if timezone_name is not None:
        spec["timezone"] = str(timezone_name)
    if jitter is not None:
        spec["jitter"] = jitter
    check_fires(build_trigger(spec))
    return spec


def check_fires(trigger: BaseTrigger) -> None:
    """Refuse a cron schedule that no time from now on matches (30 February, a year gone by):
    stored with no next run, its job would look paused though nobody paused it, and never run."""
    if isinstance(trigger, CronTrigger) and trigger.get_next_fire_time(None, timezone.now()) is None:
        raise ScheduleError(
            _("this cron schedule never fires: no time from now on matches it (such as 30 February)")
        )


def build_trigger(spec: dict[str, Any]) -> BaseTrigger:
    """Build the APScheduler trigger a spec describes, or raise ScheduleError naming the culprit."""
    tz = job_zone(spec.get("timezone"))
    jitter = spec.get("jitter")
    if jitter is not None and (not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0):
        raise ScheduleError(
            _("jitter must be a whole number of seconds >= 0, not %(value)r") % {"value": jitter}
        )
    if "cron" in spec:
        cron = spec["cron"]
        if isinstance(cron, dict):
            return _cron_from_fields(cron, tz, jitter)
        return parse_crontab(cron, tz, jitter)
    if "interval" in spec:
        interval = _interval_dict(spec["interval"])
        return ElapsedIntervalTrigger(**interval, timezone=tz, jitter=jitter)
    if "date" in spec:
        moment = _parse_date(spec["date"])
        if timezone.is_naive(moment):
            return LocalDateTrigger(moment, tz)
        return DateTrigger(run_date=moment, timezone=tz)
    raise ScheduleError(
        _("a schedule needs one of %(kinds)s; got %(given)s")
        % {"kinds": ", ".join(KINDS), "given": sorted(spec)}
    )


def parse_crontab(expression: str, tz: dt.tzinfo, jitter: int | None = None) -> CrontabTrigger:
    """A 5-field crontab line (or @daily and friends) with crontab(5)'s meaning.

    Each field is expanded here into the values it stands for, as cron reads it (weekday 0 and 7
    are Sunday, "a-b/s" with a step longer than the range is just "a"), and handed to APScheduler
    as a plain list: its own parser counts weekdays from Monday and refuses such steps.
    """
    line = CRONTAB_MACROS.get(expression.strip().lower(), expression.strip())
    parts = line.split()
    if len(parts) != 5:
        raise ScheduleError(
            _(
                "cron expression %(expression)r must have 5 fields (minute hour day month weekday), "
                "it has %(count)d; use cron={'second': ...} for APScheduler's fields"
            )
            % {"expression": expression, "count": len(parts)}
        )
    fields: dict[str, Any] = {}
    for (name, low, high, names), text in zip(CRONTAB_FIELDS, parts, strict=True):
        values = _crontab_values(text.lower(), low, high, names, expression)
        if text == "*":
            fields[name] = "*"
        elif name == "day_of_week":
            fields[name] = ",".join(day for day in APSCHEDULER_WEEKDAYS if WEEKDAY_NAMES.index(day) in values)
        else:
            fields[name] = _apscheduler_field(name, text.lower(), frozenset(values), low, high)
    minute, hour, day, _month, weekday = parts
    try:
        return CrontabTrigger(
            **fields,
            timezone=tz,
            jitter=jitter,
            # Both rules look at the fields as written, before they are expanded.
            day_or=not day.startswith("*") and not weekday.startswith("*"),
            wall_clock=not minute.startswith("*") and not hour.startswith("*"),
            expression=line,
        )
    except ValueError as exc:
        raise ScheduleError(
            _("invalid cron expression %(expression)r: %(error)s") % {"expression": expression, "error": exc}
        ) from None


def _cron_from_fields(fields: dict[str, Any], tz: dt.tzinfo, jitter: int | None) -> CronTrigger:
    unknown = sorted(set(fields) - set(CRON_FIELDS) - {"start_date", "end_date"})
    if unknown:
        raise ScheduleError(
            _("unknown cron option %(unknown)s; known: %(known)s, start_date, end_date")
            % {"unknown": ", ".join(map(repr, unknown)), "known": ", ".join(CRON_FIELDS)}
        )
    try:
        return CrontabTrigger(**fields, timezone=tz, jitter=jitter)
    except ValueError as exc:
        raise ScheduleError(
            _("invalid cron fields %(fields)r: %(error)s") % {"fields": fields, "error": exc}
        ) from None


def _crontab_values(field: str, low: int, high: int, names: tuple[str, ...], expression: str) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\w+)(?:-(\w+))?(?:/(\d+))?", part)
        if not match or (match.group(3) is not None and int(match.group(3)) == 0):
            raise ScheduleError(
                _("invalid cron expression %(expression)r: cannot read %(part)r")
                % {"expression": expression, "part": part}
            )
        first, last, step = match.groups()
        if first == "*":
            if last:
                raise ScheduleError(
                    _("invalid cron expression %(expression)r: cannot read %(part)r")
                    % {"expression": expression, "part": part}
                )
            start, end = low, high
        else:
            start = _crontab_number(first, low, high, names, expression)
            end = _crontab_number(last, low, high, names, expression) if last else (high if step else start)
            if names is WEEKDAY_NAMES and last and end == 0 and start > 0:
                end = 7  # "5-0" and "fri-sun" run up to Sunday; "0-0" is Sunday alone
        if start > end:
            raise ScheduleError(
                _("invalid cron expression %(expression)r: range %(part)r runs backwards")
                % {"expression": expression, "part": part}
            )
        values.update(range(start, end + 1, int(step or 1)))
    return {day % 7 for day in values} if names is WEEKDAY_NAMES else values


# Cached: checking how APScheduler reads a field matches it against each of its values, and a
# site declares thousands of jobs with a few expressions.
@functools.lru_cache(maxsize=1024)
def _apscheduler_field(name: str, text: str, values: frozenset[int], low: int, high: int) -> str:
    """The field as written when APScheduler reads it the same way (it reads better), else a list."""
    if re.fullmatch(r"[0-9*,/-]+", text):
        try:
            field = CronTrigger.FIELDS_MAP[name](name, text)
        except ValueError:
            pass  # e.g. a step longer than its range, which cron allows
        else:
            base = dt.datetime(2001, 1, 1)  # 2001: every month has its day 1 on a real date
            parts: list[dict[str, Any]] = [{name: v} for v in range(low, high + 1)]
            if {p[name] for p in parts if field.get_next_value(base.replace(**p)) == p[name]} == values:
                return text
    return ",".join(map(str, sorted(values)))


def _crontab_number(token: str, low: int, high: int, names: tuple[str, ...], expression: str) -> int:
    if token.isdigit() and low <= int(token) <= high:
        return int(token)
    if token in names:
        return names.index(token) + (1 if names is MONTH_NAMES else 0)
    if names is WEEKDAY_NAMES:
        raise ScheduleError(
            _("invalid cron expression %(expression)r: invalid weekday %(token)r (use 0-7 or sun-sat)")
            % {"expression": expression, "token": token}
        )
    raise ScheduleError(
        _("invalid cron expression %(expression)r: %(token)r is not in %(low)s-%(high)s")
        % {"expression": expression, "token": token, "low": low, "high": high}
    )


def _interval_dict(value: Any) -> dict[str, int | float]:
    if isinstance(value, dt.timedelta):
        value = {"seconds": value.total_seconds()}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"seconds": value}
    if not isinstance(value, dict):
        raise ScheduleError(
            _("interval must be a timedelta, seconds or a dict of units, not %(value)r") % {"value": value}
        )
    unknown = sorted(set(value) - set(INTERVAL_UNITS))
    if unknown:
        raise ScheduleError(
            _("unknown interval option %(unknown)s; known: %(known)s")
            % {"unknown": ", ".join(map(repr, unknown)), "known": ", ".join(INTERVAL_UNITS)}
        )
    for unit, amount in value.items():
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
            raise ScheduleError(
                _("interval %(unit)s must be a number >= 0, not %(value)r") % {"unit": unit, "value": amount}
            )
    seconds = dt.timedelta(**value).total_seconds()
    if seconds <= 0:
        raise ScheduleError(_("interval must be longer than zero"))
    return _split_seconds(seconds)


def _split_seconds(seconds: float) -> dict[str, int | float]:
    """Express an interval in the largest whole units, so the stored spec reads naturally."""
    parts: dict[str, int | float] = {}
    for unit, size in (("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts[unit] = int(count)
    if seconds:
        parts["seconds"] = int(seconds) if float(seconds).is_integer() else seconds
    return parts


def _parse_date(value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleError(
                _("date %(value)r is not an ISO 8601 date and time") % {"value": value}
            ) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise ScheduleError(_("date must be a datetime or ISO 8601 string, not %(value)r") % {"value": value})
    return value


def job_zone(name: str | None) -> dt.tzinfo:
    if name is None:
        return zoneinfo.ZoneInfo(settings.TIME_ZONE or "UTC")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(_("unknown timezone %(name)r") % {"name": name}) from None


def describe(trigger: BaseTrigger) -> str:
    """The trigger in words: "At 03:00, every day", "Every 5 minutes", "Once, at …"."""
    if isinstance(trigger, CronTrigger):
        text = _describe_cron(trigger)
    elif isinstance(trigger, IntervalTrigger):
        text = _describe_interval(trigger.interval.total_seconds())
    elif isinstance(trigger, DateTrigger):
        return _("Once, at %(time)s") % {"time": format_local(trigger.run_date)}
    else:
        return str(trigger)
    if str(getattr(trigger, "timezone", "")) not in ("", settings.TIME_ZONE):
        text += f" ({trigger.timezone})"
    if getattr(trigger, "jitter", None):
        text += _(", up to %(seconds)s s late on purpose (jitter)") % {"seconds": trigger.jitter}
    return text


def _describe_cron(trigger: CronTrigger) -> str:
    line = crontab_of(trigger, with_seconds=True)
    if line is None:
        return "Cron: " + str(trigger)[5:-1]
    options = Options()
    options.use_24hour_time_format = True
    options.locale_code = cron_descriptor_locale(translation.get_language())
    try:
        text = ExpressionDescriptor(line, options).get_description()
    except Exception:  # cron-descriptor raises its own and plain errors for what it cannot phrase
        return "Cron: " + str(trigger)[5:-1]
    # cron-descriptor's English leaves "every day" unsaid after "At 03:00"; its other languages say it.
    if options.locale_code == "en_US" and text.startswith("At ") and line.split()[-3:] == ["*", "*", "*"]:
        text += ", every day"
    if options.locale_code != "en_US":
        text = _ENGLISH_NAMES.sub(lambda match: str(_LOCAL_NAMES[match.group()]), text)
    return text


def crontab_of(trigger: CronTrigger, with_seconds: bool = False) -> str | None:
    """The trigger as a crontab line, or None if it has no crontab form.

    With ``with_seconds`` a 6-field line (seconds first) is given when seconds are not zero.
    """
    if isinstance(trigger, CrontabTrigger) and trigger.expression:
        return trigger.expression  # as written: a translated weekday field could change the day rule
    fields = {field.name: field for field in trigger.fields}
    if not (fields["year"].is_default and fields["week"].is_default):
        return None
    weekdays = _cron_weekdays(fields["day_of_week"])
    if weekdays is None:
        return None
    parts = [str(fields[name]) for name in ("minute", "hour", "day", "month")] + [weekdays]
    if str(fields["second"]) != "0":
        if not with_seconds:
            return None
        parts.insert(0, str(fields["second"]))
    return " ".join(parts)


def spec_of(trigger: BaseTrigger) -> dict[str, Any]:
    """The spec of an existing trigger, as a form shows it for editing."""
    spec: dict[str, Any]
    if isinstance(trigger, CronTrigger):
        line = crontab_of(trigger)
        spec = (
            {"cron": line} if line else {"cron": {f.name: str(f) for f in trigger.fields if not f.is_default}}
        )
    elif isinstance(trigger, IntervalTrigger):
        spec = {"interval": _split_seconds(trigger.interval.total_seconds())}
    elif isinstance(trigger, LocalDateTrigger):  # as written, so an edit keeps the wall-clock time
        return {"date": trigger.wall.isoformat(), "timezone": str(trigger.zone)}
    elif isinstance(trigger, DateTrigger):
        return {"date": trigger.run_date.isoformat()}
    else:
        raise ScheduleError(_("%(kind)s triggers cannot be edited here") % {"kind": type(trigger).__name__})
    spec["timezone"] = str(trigger.timezone)
    if trigger.jitter:
        spec["jitter"] = trigger.jitter
    return spec


def _cron_weekdays(field: Any) -> str | None:
    """APScheduler's weekday field as crontab names, or None if it has no crontab form."""
    if field.is_default:
        return "*"
    monday = dt.datetime(2024, 1, 1)
    matching = []
    for offset in range(7):
        day = monday + dt.timedelta(days=offset)
        if field.get_next_value(day) == offset:
            matching.append(offset)
    if not matching:
        return None
    if len(matching) == 7:
        return "*"
    names = [APSCHEDULER_WEEKDAYS[i].upper() for i in matching]
    if len(matching) >= 3 and matching == list(range(matching[0], matching[-1] + 1)):
        return f"{names[0]}-{names[-1]}"
    return ",".join(names)


def _describe_interval(seconds: float) -> str:
    parts = _split_seconds(seconds)
    if len(parts) == 1 and next(iter(parts.values())) == 1:
        return EVERY_ONE[next(iter(parts))]()
    duration = " ".join(UNIT_COUNTS[unit](count) for unit, count in parts.items())
    return _("Every %(duration)s") % {"duration": duration}


# "Every minute", not "Every 1 minute"; a function each so that the words are looked up in the
# language active when the schedule is described, and makemessages finds every one.
EVERY_ONE = {
    "weeks": lambda: _("Every week"),
    "days": lambda: _("Every day"),
    "hours": lambda: _("Every hour"),
    "minutes": lambda: _("Every minute"),
    "seconds": lambda: _("Every second"),
}


def _plural(count: float) -> int:
    # ngettext chooses by a whole number; 1.5 hours are "hours".
    return int(count) if count == int(count) else 2


UNIT_COUNTS = {
    "weeks": lambda n: ngettext("%(count)s week", "%(count)s weeks", _plural(n)) % {"count": f"{n:g}"},
    "days": lambda n: ngettext("%(count)s day", "%(count)s days", _plural(n)) % {"count": f"{n:g}"},
    "hours": lambda n: ngettext("%(count)s hour", "%(count)s hours", _plural(n)) % {"count": f"{n:g}"},
    "minutes": lambda n: ngettext("%(count)s minute", "%(count)s minutes", _plural(n)) % {"count": f"{n:g}"},
    "seconds": lambda n: ngettext("%(count)s second", "%(count)s seconds", _plural(n)) % {"count": f"{n:g}"},
}


@functools.cache
def cron_descriptor_locale(language: str | None) -> str:
    """cron-descriptor's locale for a Django language code ("ja" -> "ja_JP", "zh-hans" -> "zh_CN");
    English when it has none."""
    if not language:
        return "en_US"
    name = translation.to_locale(language)
    known = sorted(path.stem for path in CRON_DESCRIPTOR_LOCALES.glob("*.mo"))
    wanted = CHINESE_SCRIPTS.get(name.lower(), name)
    if wanted in known:
        return wanted
    same_language = [code for code in known if code.split("_")[0] == wanted.split("_")[0].lower()]
    return same_language[0] if same_language else "en_US"


# cron-descriptor names days and months with the calendar module, in the process's locale (the C
# locale's English in a web server) whatever its locale_code: Django's catalogues name them instead.
_LOCAL_NAMES = {
    **{calendar.day_name[number]: name for number, name in WEEKDAYS.items()},
    **{calendar.month_name[number]: name for number, name in MONTHS.items()},
}
_ENGLISH_NAMES = re.compile(r"\b(" + "|".join(_LOCAL_NAMES) + r")\b")
CRON_DESCRIPTOR_LOCALES = pathlib.Path(cron_descriptor.__file__).parent / "locale"
# Django names Chinese by script, cron-descriptor by region.
CHINESE_SCRIPTS = {
    "zh_hans": "zh_CN",
    "zh_hant": "zh_TW",
    "zh_cn": "zh_CN",
    "zh_sg": "zh_CN",
    "zh_tw": "zh_TW",
}


def format_local(moment: dt.datetime | None, zone: dt.tzinfo | None = None) -> str:
    """A moment in the site's time zone, as operators read it: 2026-11-23 14:05:00 CET (in English;
    in Japanese 2026年11月23日 14:05:00 CET: the active language's date format).

    ``zone`` is the site's time zone looked up once by a caller formatting thousands of moments
    (the admin timeline): looking it up is a third of the cost of a call.
    """
    if moment is None:
        return "-"
    local = timezone.localtime(moment, zone)
    language = translation.get_language()
    # English keeps the ISO date operators grep logs for; another language gets its own date
    # (2026年12月6日), the time to the second as everywhere.
    if language is None or language.startswith("en"):
        return local.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{formats.date_format(local, 'DATE_FORMAT')} {local:%H:%M:%S %Z}"


def relative(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """How far a moment is from now, as a hint beside its local time: "in 12 s", "4 minutes ago"."""
    now = now or timezone.now()
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return str(_("now"))
    if abs(seconds) < 60:
        distance = f"{abs(seconds):.0f}\xa0s"
    else:
        distance = timeuntil(moment, now, depth=1) if seconds > 0 else timesince(moment, now, depth=1)
    template = _("in %(distance)s") if seconds > 0 else _("%(distance)s ago")
    return str(template % {"distance": distance})
