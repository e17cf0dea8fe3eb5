"""The one set of limits for job options and schedules, whoever sends them.

``@job``, the admin's forms, the HTTP API, the CLI and ``scheduling.control`` all check what a
person typed here, before anything is built or stored, so a value that would stop scheduling
(a grace time of 10**14 seconds, a jitter that overflows a date, a cron field with 150,000 values)
is refused with the same words everywhere: the field, the rule and the value sent.

The limits are generous for real use and small enough that no arithmetic on them overflows:
datetimes end in the year 9999, so every bound keeps a day's room for any UTC offset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.utils import timezone as django_timezone
from django.utils.translation import gettext as _

from scheduling import safejson
from scheduling.crontab import resolve_wall_time
from scheduling.policy import ALERT_EVENTS, OVERLAP_POLICIES, REDACTED
from scheduling.schedules import CRON_FIELDS, INTERVAL_UNITS, KINDS, ScheduleError, normalize_spec

DAY = 86400
MAX_MISFIRE_GRACE_TIME = 31 * DAY
MAX_JITTER = DAY
MIN_INTERVAL = 1
MAX_INTERVAL = 3652 * DAY  # ten years, leap days included
MAX_INSTANCES = 1000
MAX_CRONTAB_LENGTH = 256
MAX_CRON_FIELD_LENGTH = 128
MAX_TEXT_LENGTH = 255  # the job store's id column, and the names beside it
MAX_TIMEZONE_LENGTH = 64
MAX_DATE_LENGTH = 64
# A day inside each end of datetime's range: converting to or from any UTC offset stays valid.
FIRST_DATE = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
LAST_DATE = dt.datetime(9999, 12, 30, 23, 59, 59, tzinfo=dt.UTC)
UNIT_SECONDS = {"weeks": 7 * DAY, "days": DAY, "hours": 3600, "minutes": 60, "seconds": 1}
MAX_ARGUMENTS_BYTES = 16 * 1024  # the args, or the kwargs, of one run as JSON: the API's body limit
MAX_TIMEOUT = 31 * DAY
MAX_RETRIES = 100
MAX_RETRY_BACKOFF = DAY
MAX_RETRY_BACKOFF_MAX = 7 * DAY
MAX_RETRY_ON = 32  # exception classes one job's retry_on may name
MAX_USER_LENGTH = 150  # a user name, as Django's auth stores it
MAX_CALENDARS = 10  # calendars one job names
MAX_CALENDAR_NAME_LENGTH = 100
MAX_LOCK_NAME_LENGTH = 100
MAX_ALERT_DESTINATIONS = 10
MAX_DESTINATION_LENGTH = 500
MAX_AFTER_FAILURES = 1000
MIN_NO_SUCCESS_WITHIN = 60
# "longer than k times its usual duration": below 1.5 ordinary variation alerts; above 100 it is
# better said in seconds.
MIN_USUAL_FACTOR, MAX_USUAL_FACTOR = 1.5, 100.0
MAX_NO_SUCCESS_WITHIN = 366 * DAY
ALERT_FIELDS = ("to", "on", "after_failures", "longer_than", "longer_than_usual", "no_success_within")
MAX_CALENDAR_PERIOD = 366 * DAY  # one excluded date-time range
OPTION_NAMES = (
    "max_instances",
    "coalesce",
    "misfire_grace_time",
    "executor",
    "timeout",
    "calendars",
    "overlap",
    "lock",
    "alert",
)
RETRY_OPTION_NAMES = ("retries", "retry_backoff", "retry_backoff_max", "retry_on")


class InputError(ScheduleError):
    """A value outside the limits. ``field`` names it, ``code`` is a stable identifier for
    programs (the message may be translated, the code never changes).

    It is a ScheduleError so that every caller which already reports a bad schedule reports this.
    """

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


def shown(value: Any) -> str:
    """The value as the error message quotes it: short, whatever was sent."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def gettext_noop(message: str) -> str:
    """Mark ``message`` for the catalogues (makemessages looks for this name) and return it as is.

    Django's own ``gettext_noop`` reads the settings, and this module is imported before they are
    configured (``import scheduling`` in a site's settings or a script)."""
    return message


class Rule:
    """What a value must be, put into words (translated) only when a value breaks it: gettext
    costs more than most checks, and a site with 100,000 declared jobs checks them all at start-up."""

    __slots__ = ("message", "params")

    def __init__(self, message: str, **params: Any) -> None:
        self.message = message  # marked with gettext_noop where it is written
        self.params = params

    def __str__(self) -> str:
        return _(self.message) % self.params


def _refuse(field: str, rule: str | Rule, value: Any, code: str = "out_of_range") -> InputError:
    return InputError(
        field,
        code,
        _("%(field)s must be %(rule)s, not %(value)s")
        % {"field": field, "rule": rule, "value": shown(value)},
    )


def whole_number(field: str, value: Any, low: int, high: int, rule: str | Rule) -> int:
    """``value`` as an int from ``low`` to ``high``; bools and floats with a fraction are refused."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _refuse(field, rule, value, code="invalid_type")
    if not low <= value <= high:
        raise _refuse(field, rule, value)
    return value


def whole_number_text(field: str, text: str, low: int, high: int) -> int:
    """A whole number typed as text (a query parameter, a command-line option): ASCII digits only.

    ``str.isdigit`` accepts '²' and other digits ``int`` refuses; a length check first keeps a
    5,000-digit string from reaching ``int`` at all.
    """
    rule = Rule(gettext_noop("a whole number from %(low)s to %(high)s"), low=low, high=high)
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(high)):
        raise _refuse(field, rule, text, code="invalid_number")
    return whole_number(field, int(text), low, high, rule)


def check_misfire_grace_time(value: Any) -> int | None:
    if value is None:
        return None
    return whole_number(
        "misfire_grace_time",
        value,
        1,
        MAX_MISFIRE_GRACE_TIME,
        Rule(
            gettext_noop("a whole number of seconds from 1 to %(max)s (31 days), or none"),
            max=MAX_MISFIRE_GRACE_TIME,
        ),
    )


def check_jitter(value: Any) -> int | None:
    if value is None:
        return None
    return whole_number(
        "jitter",
        value,
        0,
        MAX_JITTER,
        Rule(gettext_noop("a whole number of seconds from 0 to %(max)s (1 day)"), max=MAX_JITTER),
    )


def check_timeout(value: Any) -> int | None:
    if value is None:
        return None
    return whole_number(
        "timeout",
        value,
        1,
        MAX_TIMEOUT,
        Rule(gettext_noop("a whole number of seconds from 1 to %(max)s (31 days), or none"), max=MAX_TIMEOUT),
    )


def check_overlap(value: Any) -> str:
    if value not in OVERLAP_POLICIES:
        raise _refuse(
            "overlap",
            _("one of %(choices)s") % {"choices": ", ".join(OVERLAP_POLICIES)},
            value,
            "invalid_choice",
        )
    return str(value)


def check_lock(value: Any) -> str | None:
    """A lock's name (see scheduling.policy.RunPolicy.lock); blank or None: no lock."""
    if value is None:
        return None
    name = text("lock", value, MAX_LOCK_NAME_LENGTH).strip()
    return name or None


def check_alert(value: Any) -> dict[str, Any] | None:
    """A job's alerts (see scheduling.policy.AlertPolicy), as stored; None: the site's."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _refuse(
            "alert", _("an object of %(fields)s") % {"fields": ", ".join(ALERT_FIELDS)}, value, "invalid_type"
        )
    if unknown := sorted(set(value) - set(ALERT_FIELDS)):
        raise InputError(
            f"alert.{unknown[0]}",
            "unknown_field",
            _("unknown alert option %(names)s; known: %(known)s")
            % {"names": ", ".join(map(str, unknown)), "known": ", ".join(ALERT_FIELDS)},
        )
    checked: dict[str, Any] = {"to": check_destinations(value.get("to", []))}
    on = value.get("on", ["failure"])
    rule = Rule(gettext_noop("a list of distinct events among %(events)s"), events=", ".join(ALERT_EVENTS))
    if (
        not isinstance(on, (list, tuple))
        or any(event not in ALERT_EVENTS for event in on)
        or len(set(on)) != len(on)
    ):
        raise _refuse("alert.on", rule, on, "invalid_choice")
    checked["on"] = list(on)
    checked["after_failures"] = whole_number(
        "alert.after_failures",
        value.get("after_failures", 1),
        1,
        MAX_AFTER_FAILURES,
        Rule(gettext_noop("a whole number of runs in a row from 1 to %(max)s"), max=MAX_AFTER_FAILURES),
    )
    for name, low, high in (
        ("longer_than", 1, MAX_TIMEOUT),
        ("no_success_within", MIN_NO_SUCCESS_WITHIN, MAX_NO_SUCCESS_WITHIN),
    ):
        given = value.get(name)
        checked[name] = (
            None
            if given is None
            else whole_number(
                f"alert.{name}",
                given,
                low,
                high,
                Rule(
                    gettext_noop("a whole number of seconds from %(low)s to %(high)s, or none"),
                    low=low,
                    high=high,
                ),
            )
        )
    checked["longer_than_usual"] = usual_factor(value.get("longer_than_usual"))
    return checked


def usual_factor(value: Any) -> float | None:
    """How many times its usual duration a run may take before it alerts: a number, or none."""
    if value is None:
        return None
    rule = Rule(
        gettext_noop("a number from %(low)s to %(high)s (times the usual duration), or none"),
        low=MIN_USUAL_FACTOR,
        high=f"{MAX_USUAL_FACTOR:g}",
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse("alert.longer_than_usual", rule, value, "invalid_type")
    if not (_finite(value) and MIN_USUAL_FACTOR <= value <= MAX_USUAL_FACTOR):
        raise _refuse("alert.longer_than_usual", rule, value)
    return float(value)


def _finite(number: float) -> bool:
    """Not NaN or infinite. An int always is: ``math.isfinite`` would convert it to a float, which
    raises OverflowError for one of 309 digits or more (a YAML file or a Python caller can send it)."""
    return isinstance(number, int) or math.isfinite(number)


def check_destinations(value: Any) -> list[str]:
    """Where alerts go: "mail_admins", "log", an e-mail address, an http(s) URL, "slack:<url>"."""
    rule = Rule(gettext_noop("a list of at most %(max)s destinations"), max=MAX_ALERT_DESTINATIONS)
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ALERT_DESTINATIONS:
        raise _refuse("alert.to", rule, value, "invalid_type")
    checked = []
    for number, item in enumerate(value):
        field = f"alert.to[{number}]"
        destination = text(field, item, MAX_DESTINATION_LENGTH).strip()
        if destination not in ("mail_admins", "log") and not _valid_destination(destination):
            raise InputError(
                field,
                "invalid_destination",
                _(
                    "%(field)s must be mail_admins, log, an e-mail address, an http(s) URL or "
                    "slack:<url> (a whole URL: not one shown shortened with …), not %(value)s"
                )
                % {"field": field, "value": shown(destination)},
            )
        checked.append(destination)
    if len(set(checked)) != len(checked):
        raise _refuse("alert.to", _("a list of distinct destinations"), value, "duplicate")
    return checked


def _valid_destination(destination: str) -> bool:
    url = destination.removeprefix("slack:")
    if url.endswith(f"/{REDACTED}"):
        return False  # a webhook URL as pages show it, sent back: its path is not known here
    try:
        if url.startswith(("http://", "https://")):
            URLValidator(schemes=["http", "https"])(url)
        elif url == destination:
            validate_email(destination)
        else:
            return False
    except ValidationError:
        return False
    return True


def check_overlap_placement(overlap: str, runs_in: str) -> None:
    """ "replace" stops a run, which only the process pool and task workers can do."""
    if overlap == "replace" and runs_in == "threads":
        raise InputError(
            "overlap",
            "invalid_choice",
            _(
                "overlap 'replace' cancels the oldest running run, which a thread cannot be made to "
                "stop: use runs_in='processes' or 'tasks', or overlap 'queue'"
            ),
        )


def check_task_timeout(timeout: int | None, runs_in: str, task_timeout: float) -> None:
    """A run in task workers is recorded interrupted ``task_timeout`` seconds after its start
    (SCHEDULING_TASK_TIMEOUT): a timeout at least that long would never be reached."""
    if runs_in == "tasks" and timeout is not None and timeout >= task_timeout:
        raise InputError(
            "timeout",
            "out_of_range",
            _(
                "timeout must be shorter than SCHEDULING_TASK_TIMEOUT (%(limit)g s) for a job in task "
                "workers, whose runs are recorded interrupted then; not %(value)s"
            )
            % {"limit": task_timeout, "value": timeout},
        )


def check_retries(value: Any) -> int:
    return whole_number(
        "retries",
        value,
        0,
        MAX_RETRIES,
        Rule(gettext_noop("a whole number of further attempts from 0 to %(max)s"), max=MAX_RETRIES),
    )


def check_retry_backoff(value: Any) -> int:
    return whole_number(
        "retry_backoff",
        value,
        0,
        MAX_RETRY_BACKOFF,
        Rule(gettext_noop("a whole number of seconds from 0 to %(max)s (1 day)"), max=MAX_RETRY_BACKOFF),
    )


def check_retry_backoff_max(value: Any) -> int:
    return whole_number(
        "retry_backoff_max",
        value,
        0,
        MAX_RETRY_BACKOFF_MAX,
        Rule(gettext_noop("a whole number of seconds from 0 to %(max)s (7 days)"), max=MAX_RETRY_BACKOFF_MAX),
    )


def check_retry_on(value: Any) -> list[str]:
    """Exception classes (or their dotted names) as the dotted names stored; each entry must be
    an importable subclass of BaseException, so that a typo fails here, not at the first failure."""
    rule = Rule(
        gettext_noop("a list of at most %(max)s exception classes or their dotted names"), max=MAX_RETRY_ON
    )
    if isinstance(value, (str, type)):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) > MAX_RETRY_ON:
        raise _refuse("retry_on", rule, value, code="invalid_type")
    names = []
    for number, entry in enumerate(value):
        field = f"retry_on[{number}]"
        if isinstance(entry, type):
            cls: Any = entry
        elif isinstance(entry, str):
            name = text(field, entry)
            cls = _import_dotted(field, name if "." in name else f"builtins.{name}")
        else:
            raise _refuse(field, _("an exception class or its dotted name"), entry, code="invalid_type")
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise _refuse(
                field, _("an exception class (a subclass of BaseException)"), entry, "not_exception"
            )
        name = exception_name(cls)
        if _import_dotted(field, name) is not cls:
            raise _refuse(field, _("a class importable by its dotted name"), name, code="not_importable")
        if name not in names:
            names.append(name)
    return names


def exception_name(cls: type) -> str:
    """The dotted name a class is stored and matched by (``builtins.ConnectionError``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_dotted(field: str, name: str) -> Any:
    """The object a dotted name refers to: the longest module prefix, then attributes.

    Only modules already imported are looked in: a name typed in the admin or sent to the API
    must not import code (an import runs the module's top level); the module of an exception a
    job can raise is loaded once the job's own module is.
    """
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        found: Any = sys.modules.get(".".join(parts[:split]))
        if found is None:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise InputError(
        field,
        "not_importable",
        _("%(field)s: %(name)s is not a class of a loaded module (write module.Class)")
        % {"field": field, "name": shown(name)},
    )


def check_calendars(value: Any) -> tuple[str, ...]:
    """A job's calendars: a list of distinct names (whether each exists is
    ``scheduling.calendars.check_known``'s, which needs the database)."""
    rule = Rule(gettext_noop("a list of at most %(max)s calendar names"), max=MAX_CALENDARS)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or len(value) > MAX_CALENDARS:
        raise _refuse("calendars", rule, value, code="invalid_type")
    names = tuple(calendar_name("calendars", name) for name in value)
    if len(set(names)) != len(names):
        raise _refuse("calendars", _("a list of distinct calendar names"), value, code="duplicate")
    return names


def calendar_name(field: str, value: Any) -> str:
    """A calendar's name, stripped: not blank, and without the characters a job id may not hold."""
    name = text(field, value, MAX_CALENDAR_NAME_LENGTH).strip()
    if not name:
        raise InputError(field, "required", _("%(field)s must name a calendar") % {"field": field})
    _check_plain(field, name)
    return name


def calendar_period(
    day: Any, start: Any, end: Any, zone: dt.tzinfo
) -> tuple[dt.date | None, dt.datetime | None, dt.datetime | None]:
    """An excluded period: a whole ``day``, or ``start`` to ``end`` (naive: in ``zone``), end
    after start, at most a year long, within the dates a job can run."""
    if day is not None:
        if start is not None or end is not None:
            raise InputError(
                "day", "day_or_range", _("day: give a whole day, or a start and an end, not both")
            )
        if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
            raise _refuse("day", _("a date"), day, code="invalid_type")
        # The bounds of a range's start and end: a day of year 1 would be one no job can run on.
        if not FIRST_DATE.date() <= day <= LAST_DATE.date():
            raise _refuse("day", _("a date from 1970 to 9999"), day.isoformat())
        return day, None, None
    if start is None or end is None:
        raise InputError("start", "day_or_range", _("start: give a whole day, or a start and an end"))
    moments = []
    for field, value in (("start", start), ("end", end)):
        if not isinstance(value, dt.datetime):
            raise _refuse(field, _("a date and time"), value, code="invalid_type")
        moment = resolve_wall_time(value, zone) if value.tzinfo is None else value
        if not FIRST_DATE <= moment <= LAST_DATE:
            raise _refuse(field, _("a date from 1970 to 9999"), value)
        moments.append(moment)
    if moments[1] <= moments[0]:
        raise _refuse("end", _("after the start"), end, code="end_before_start")
    if (moments[1] - moments[0]).total_seconds() > MAX_CALENDAR_PERIOD:
        raise _refuse("end", _("at most 366 days after the start"), end)
    return None, moments[0], moments[1]


def check_max_instances(value: Any) -> int:
    return whole_number(
        "max_instances",
        value,
        1,
        MAX_INSTANCES,
        Rule(gettext_noop("a whole number from 1 to %(max)s"), max=MAX_INSTANCES),
    )


def check_coalesce(value: Any) -> bool:
    return flag("coalesce", value)


def flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse(field, _("true or false"), value, code="invalid_type")
    return value


def text(field: str, value: Any, max_length: int = MAX_TEXT_LENGTH) -> str:
    rule = Rule(gettext_noop("text of at most %(max)s characters"), max=max_length)
    if not isinstance(value, str):
        raise _refuse(field, rule, value, code="invalid_type")
    _check_characters(field, value)
    if len(value) > max_length:
        raise InputError(
            field,
            "too_long",
            _("%(field)s must be %(rule)s, not %(length)s")
            % {"field": field, "rule": rule, "length": len(value)},
        )
    return value


def job_id(value: Any, field: str = "job_id") -> str:
    """A job's id, wherever one is given (``control.add``, the admin, the API, an imported file):
    text that fits the store's column, not blank, without control characters. A newline, a tab or an escape
    in an id breaks every line that names the job: logs, the CLI's output, an import's diff."""
    value = text(field, value)
    if not value.strip():
        raise InputError(field, "invalid_text", _("%(field)s must not be empty") % {"field": field})
    _check_plain(field, value)
    return value


def _check_plain(field: str, value: str) -> None:
    """Refuse the characters that break or disguise a name where it is shown (a job id, a
    calendar's name), naming the first one found as an escape."""
    if (found := _CONTROL_CHARACTER.search(value)) is not None:
        raise InputError(
            field,
            "invalid_text",
            _("%(field)s must not contain a control character (it has %(character)s)")
            % {"field": field, "character": ascii(found.group())},
        )


# Unicode's "Cc" category: C0, DEL and C1 (NUL is refused by _check_characters, for any text); the
# line and paragraph separators U+2028 and U+2029, which end a line in most viewers; and the
# bidirectional controls (Unicode's Bidi_Control: U+061C, U+200E, U+200F, U+202A to U+202E,
# U+2066 to U+2069), which reorder what is shown: "\u202enightly" reads as "ylthgin" in the admin.
_UNSHOWABLE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL_CHARACTER = re.compile(f"[{_UNSHOWABLE}]")
# The same rule as a pattern of the OpenAPI document (Python's and ECMA-262's syntax alike): none
# of those characters, and something besides white space.
JOB_ID_PATTERN = f"^[^{_UNSHOWABLE}]*[^\\s{_UNSHOWABLE}][^{_UNSHOWABLE}]*$"


def _check_characters(field: str, value: str) -> None:
    """Refuse what no database stores as text: a NUL character (PostgreSQL refuses it) and a lone
    surrogate, which is not Unicode text at all (encoding it as UTF-8 fails)."""
    if "\x00" in value:
        raise InputError(
            field, "invalid_text", _("%(field)s must not contain a NUL character") % {"field": field}
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            field,
            "invalid_text",
            _("%(field)s must be Unicode text (it has a lone surrogate)") % {"field": field},
        ) from None


def check_storable(field: str, value: Any) -> None:
    """Refuse a JSON value any of whose strings no database stores (a NUL, a lone surrogate)."""
    _check_strings(field, value)


def _check_strings(field: str, value: Any) -> None:
    """:func:`_check_characters` for every string in a JSON value, keys included."""
    if isinstance(value, str):
        _check_characters(field, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_characters(field, key)
            _check_strings(field, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_strings(field, item)


def options(values: dict[str, Any]) -> dict[str, Any]:
    """Check the job options given: APScheduler's (max_instances, coalesce, misfire_grace_time,
    executor) and the run policy's (timeout, calendars, retries, retry_backoff,
    retry_backoff_max, retry_on, overlap, lock; see scheduling.policy)."""
    unknown = sorted(set(values) - set(OPTION_NAMES) - set(RETRY_OPTION_NAMES))
    if unknown:
        raise InputError(
            unknown[0],
            "unknown_field",
            _("unknown job option %(names)s; known: %(known)s")
            % {"names": ", ".join(unknown), "known": ", ".join(OPTION_NAMES + RETRY_OPTION_NAMES)},
        )
    checks = _OPTION_CHECKS
    checked: dict[str, Any] = {name: checks[name](value) for name, value in values.items() if name in checks}
    if "executor" in values:
        checked["executor"] = text("executor", values["executor"])
    return checked


def check_interval(value: Any) -> dict[str, float]:
    """An interval (seconds, a timedelta or a dict of units) within 1 second and 10 years."""
    rule = Rule(
        gettext_noop("from %(low)s second to %(high)s seconds (10 years)"),
        low=MIN_INTERVAL,
        high=MAX_INTERVAL,
    )
    if isinstance(value, dt.timedelta):
        value = {"seconds": value.total_seconds()}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"seconds": value}
    if not isinstance(value, dict) or not value:
        raise _refuse(
            "interval",
            _("a number of seconds or an object of %(units)s") % {"units": ", ".join(INTERVAL_UNITS)},
            value,
            code="invalid_type",
        )
    total = 0.0
    for unit, amount in value.items():
        if unit not in UNIT_SECONDS:
            raise InputError(
                "interval",
                "unknown_field",
                _("unknown interval unit %(unit)s; known: %(known)s")
                % {"unit": shown(unit), "known": ", ".join(INTERVAL_UNITS)},
            )
        field = f"interval.{unit}"
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            raise _refuse(field, _("a number"), amount, code="invalid_type")
        # Compared before multiplying: 10**400 * 60 or NaN must never reach timedelta.
        if not (_finite(amount) and 0 <= amount <= MAX_INTERVAL / UNIT_SECONDS[unit]):
            raise _refuse(field, rule, amount)
        total += amount * UNIT_SECONDS[unit]
    if not MIN_INTERVAL <= total <= MAX_INTERVAL:
        raise _refuse("interval", rule, total)
    return dict(value)


def check_date(field: str, value: Any) -> None:
    """A date and time from 1970-01-02 to 9999-12-30, whatever its UTC offset."""
    rule = Rule(
        gettext_noop("a date and time from %(first)s to %(last)s"),
        first=FIRST_DATE.date().isoformat(),
        last=LAST_DATE.date().isoformat(),
    )
    if isinstance(value, str):
        text(field, value, MAX_DATE_LENGTH)
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _refuse(field, _("an ISO 8601 date and time"), value, code="invalid_date") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise _refuse(field, rule, value, code="invalid_type")
    # Compared as wall-clock times: converting an extreme one to UTC is what overflows.
    if not FIRST_DATE.replace(tzinfo=None) <= value.replace(tzinfo=None) <= LAST_DATE.replace(tzinfo=None):
        raise _refuse(field, rule, value.isoformat())


def check_cron(value: Any) -> None:
    """A crontab line, or a dict of APScheduler's cron fields, each short enough to store."""
    if isinstance(value, str):
        text("cron", value, MAX_CRONTAB_LENGTH)
        return
    if not isinstance(value, dict):
        raise _refuse("cron", _("a crontab line or an object of cron fields"), value, code="invalid_type")
    known = (*CRON_FIELDS, "start_date", "end_date")
    for name, field_value in value.items():
        if name not in known:
            raise InputError(
                "cron",
                "unknown_field",
                _("unknown cron field %(name)s; known: %(known)s")
                % {"name": shown(name), "known": ", ".join(known)},
            )
        if name in ("start_date", "end_date"):
            check_date(f"cron.{name}", field_value)
        elif isinstance(field_value, int) and not isinstance(field_value, bool):
            whole_number(f"cron.{name}", field_value, 0, 9999, _("a whole number from 0 to 9999"))
        else:
            text(f"cron.{name}", field_value, MAX_CRON_FIELD_LENGTH)


def check_spec(value: dict[str, Any]) -> None:
    """Check a schedule spec (as stored, or as the admin form builds it) before it is built."""
    if not isinstance(value, dict):
        raise _refuse("schedule", _("an object"), value, code="invalid_type")
    given = [kind for kind in KINDS if kind in value]
    if len(given) != 1:
        raise InputError("schedule", "invalid_schedule", _("give exactly one of cron, interval or date"))
    unknown = sorted(set(value) - {*KINDS, "timezone", "jitter"})
    if unknown:
        raise InputError(
            unknown[0], "unknown_field", _("unknown schedule field %(names)s") % {"names": ", ".join(unknown)}
        )
    if given[0] == "cron":
        check_cron(value["cron"])
    elif given[0] == "interval":
        check_interval(value["interval"])
    else:
        check_date("date", value["date"])
    if value.get("timezone") is not None:
        text("timezone", value["timezone"], MAX_TIMEZONE_LENGTH)
    check_jitter(value.get("jitter"))


def schedule(
    *,
    cron: Any = None,
    interval: Any = None,
    date: Any = None,
    timezone_name: Any = None,
    jitter: Any = None,
) -> dict[str, Any]:
    """Check the user's schedule keywords against the limits, then make the spec (see schedules).

    A site declares thousands of jobs with a few schedules, and checking one builds its trigger:
    keywords that can be told apart by their hashable form are checked once (bounded cache)."""
    keywords = (cron, interval, date, timezone_name, jitter)
    try:
        given = Keywords(frozen(keywords), keywords)
        hash(given)
    except TypeError:
        return _schedule(*keywords)
    spec = _checked_schedule(given)
    # A copy: the caller may change its spec, not the cache's.
    return {name: dict(value) if isinstance(value, dict) else value for name, value in spec.items()}


@dataclasses.dataclass(frozen=True)
class Keywords:
    """Keywords given to a check, as a cache of its results keys them."""

    key: Any  # what the cache compares: frozen(values)
    values: tuple[Any, ...] = dataclasses.field(compare=False)  # what is checked


_PLAIN = frozenset({str, int, float, bool, type(None)})


def frozen(value: Any) -> Any:
    """A hashable stand-in telling apart what declaration keywords can hold: with its type, so
    that 1, 1.0 and True differ, and a datetime by its text, so that one instant written in two
    time zones does too. Raises TypeError for a value that cannot be told apart so."""
    kind = type(value)
    if kind in _PLAIN:
        return (kind, value)
    if isinstance(value, dict):
        return (dict, tuple((frozen(k), frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(map(frozen, value)))
    if isinstance(value, dt.datetime):
        return (dt.datetime, repr(value))
    return (type(value), value)


@functools.lru_cache(maxsize=1024)
def _checked_schedule(given: Keywords) -> dict[str, Any]:
    return _schedule(*given.values)


def _schedule(cron: Any, interval: Any, date: Any, timezone_name: Any, jitter: Any) -> dict[str, Any]:
    given = {k: v for k, v in (("cron", cron), ("interval", interval), ("date", date)) if v is not None}
    if len(given) != 1:
        raise InputError("schedule", "invalid_schedule", _("give exactly one of cron, interval or date"))
    raw: dict[str, Any] = {**given, "jitter": jitter}
    if timezone_name is not None:
        raw["timezone"] = timezone_name
    check_spec(raw)
    return normalize_spec(cron=cron, interval=interval, date=date, timezone_name=timezone_name, jitter=jitter)


def run_arguments(
    function: Callable[..., Any],
    args: Any,
    kwargs: Any,
    job_args: Sequence[Any] = (),
    job_kwargs: Mapping[str, Any] | None = None,
) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """Arguments for one run of ``function``, checked: ``args`` a JSON array, ``kwargs`` a JSON
    object, each None to keep the job's own (``job_args``, ``job_kwargs``); together they must
    bind to the function's signature. Returns them as JSON values, None where not given.
    """
    if args is not None:
        if not isinstance(args, (list, tuple)):
            raise _refuse("args", _("a JSON array"), args, code="invalid_type")
        args = _json_safe("args", list(args))
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
            raise _refuse("kwargs", _("a JSON object"), kwargs, code="invalid_type")
        kwargs = _json_safe("kwargs", kwargs)
    _bind(
        function,
        list(job_args) if args is None else args,
        dict(job_kwargs or {}) if kwargs is None else kwargs,
        "args" if args is not None or kwargs is None else "kwargs",
    )
    return args, kwargs


def _json_safe(field: str, value: Any) -> Any:
    """``value`` as it will be stored and read back: plain JSON, within the size and depth limits."""
    try:
        encoded = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise InputError(
            field, "invalid_type", _("%(field)s must be JSON: %(error)s") % {"field": field, "error": exc}
        ) from None
    _check_strings(field, value)
    try:
        return safejson.loads(encoded, max_length=MAX_ARGUMENTS_BYTES)
    except safejson.JsonInputError as exc:
        raise InputError(field, exc.code, f"{field}: {exc}") from None


_NAMED = re.compile(r"'([^']+)'")


def _bind(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], field: str) -> None:
    """Refuse arguments the function cannot take, naming the parameter."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: the call itself will tell
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        error = str(exc)
        named = _NAMED.search(error)
        if "keyword" in error or "multiple values" in error:
            # The keyword at fault; a missing or surplus positional one is the args' (or kwargs') fault.
            field = f"kwargs.{named.group(1)}" if named else "kwargs"
        name = getattr(function, "__qualname__", repr(function))
        raise InputError(
            field,
            "signature_mismatch",
            _("the arguments do not match %(function)s%(signature)s: %(error)s")
            % {"function": name, "signature": _plain(signature), "error": signature_error(exc)},
        ) from None


# What inspect.Signature.bind raises (Python 3.11 to 3.13), and the same words for the catalogues.
_SIGNATURE_ERRORS = [
    (re.compile(r"too many positional arguments"), gettext_noop("too many positional arguments")),
    (
        re.compile(r"missing a required argument: '(?P<name>[^']*)'"),
        gettext_noop("missing a required argument: '%(name)s'"),
    ),
    (
        re.compile(r"missing a required keyword-only argument: '(?P<name>[^']*)'"),
        gettext_noop("missing a required keyword-only argument: '%(name)s'"),
    ),
    (
        re.compile(r"got an unexpected keyword argument '(?P<name>[^']*)'"),
        gettext_noop("got an unexpected keyword argument '%(name)s'"),
    ),
    (
        re.compile(r"multiple values for argument '(?P<name>[^']*)'"),
        gettext_noop("multiple values for argument '%(name)s'"),
    ),
    (
        re.compile(r"'(?P<name>[^']*)' parameter is positional only, but was passed as a keyword"),
        gettext_noop("'%(name)s' parameter is positional only, but was passed as a keyword"),
    ),
    (
        re.compile(r"got some positional-only arguments passed as keyword arguments: '(?P<name>[^']*)'"),
        gettext_noop("got some positional-only arguments passed as keyword arguments: '%(name)s'"),
    ),
]


def signature_error(exc: TypeError) -> str:
    """The TypeError of ``inspect.Signature.bind`` in the active language (in English, Python's
    own words); a text it does not know, as Python says it."""
    error = str(exc)
    for pattern, text in _SIGNATURE_ERRORS:
        if (match := pattern.fullmatch(error)) is not None:
            return _(text) % match.groupdict()
    return error


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """The parameters only: annotations are strings under ``from __future__ import annotations``."""
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[parameter.replace(annotation=empty) for parameter in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def maintenance_window(reason: Any, until: Any, now: dt.datetime) -> tuple[str, dt.datetime | None]:
    """A maintenance pause's reason (required: the skipped runs record it) and optional end.

    ``until`` is an aware datetime or ISO 8601 text; without a UTC offset it is read in the
    site's time zone. It must lie after ``now``: a pause that ended already pauses nothing.
    """
    reason = text("reason", reason).strip()
    if not reason:
        raise InputError("reason", "required", _("reason must say why the scheduler is paused"))
    if until is None:
        return reason, None
    check_date("until", until)
    moment = dt.datetime.fromisoformat(until) if isinstance(until, str) else until
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time())
    if moment.tzinfo is None:
        moment = django_timezone.make_aware(moment)
    if moment <= now:
        raise _refuse("until", _("a moment in the future"), moment.isoformat(), code="date_in_past")
    return reason, moment


# Built once, after the checks it names: 100,000 declarations each check their options.
_OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "max_instances": check_max_instances,
    "coalesce": check_coalesce,
    "misfire_grace_time": check_misfire_grace_time,
    "timeout": check_timeout,
    "retries": check_retries,
    "retry_backoff": check_retry_backoff,
    "retry_backoff_max": check_retry_backoff_max,
    "retry_on": check_retry_on,
    "calendars": check_calendars,
    "overlap": check_overlap,
    "lock": check_lock,
    "alert": check_alert,
}
