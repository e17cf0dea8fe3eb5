"""Hypothesis against the parsers that take text from people: a crontab line, an interval, a date,
JSON arguments bound to a function's signature. Any input gives a schedule that can be built and
asked for its next run, or the validator's error, never another exception.

Derandomized with a fixed number of examples, so CI runs the same inputs every time, quickly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scheduling import safejson, validation
from scheduling.forms import JobAddForm
from scheduling.schedules import INTERVAL_UNITS, ScheduleError, build_trigger
from tests.test_admin import schedulables  # noqa: F401  # a fixture

FUZZ = settings(derandomize=True, max_examples=300, deadline=None, database=None)
NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)

CRON_ATOM = st.one_of(
    st.integers(-3, 70).map(str),
    st.sampled_from(["*", "L", "last", "mon", "sun", "fri", "jan", "dec", "?", "#", "x", "", "0000000000"]),
)
CRON_PART = st.builds(
    lambda a, b, step: a + (f"-{b}" if b else "") + (f"/{step}" if step else ""),
    CRON_ATOM,
    st.one_of(st.none(), CRON_ATOM),
    st.one_of(st.none(), st.integers(-1, 100).map(str)),
)
CRON_FIELD = st.lists(CRON_PART, min_size=1, max_size=4).map(",".join)
CRONTAB = st.one_of(
    st.lists(CRON_FIELD, min_size=4, max_size=6).map(" ".join),
    st.sampled_from(["@daily", "@hourly", "@yearly", "@reboot", "@DAILY"]),
    st.text(max_size=40),
)
NUMBER = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)


def built(spec: dict[str, Any]) -> None:
    """The spec as the scheduler uses it: a trigger, asked for its next run."""
    trigger = build_trigger(spec)
    trigger.get_next_fire_time(None, NOW)


@FUZZ
@given(line=CRONTAB, zone=st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", ""])))
@example(line=",".join(["1"] * 150_000) + " * * * *", zone=None)
@example(line="0 0 31 2 *", zone="UTC")
def test_any_crontab_line_is_a_schedule_or_the_validators_error(line: str, zone: str | None) -> None:
    try:
        spec = validation.schedule(cron=line, timezone_name=zone)
    except ScheduleError:
        return
    built(spec)


@FUZZ
@given(
    fields=st.dictionaries(
        st.one_of(
            st.sampled_from(["second", "minute", "hour", "day", "month", "year", "week", "day_of_week"]),
            st.text(max_size=8),
        ),
        st.one_of(CRON_FIELD, st.integers(-5, 10_000)),
        max_size=4,
    )
)
def test_any_dict_of_cron_fields_is_a_schedule_or_the_validators_error(fields: dict[str, Any]) -> None:
    try:
        spec = validation.schedule(cron=fields)
    except ScheduleError:
        return
    built(spec)


@FUZZ
@given(
    interval=st.one_of(
        NUMBER,
        st.dictionaries(st.one_of(st.sampled_from(INTERVAL_UNITS), st.text(max_size=8)), NUMBER, max_size=5),
    ),
    jitter=NUMBER,
)
@example(interval={"weeks": 1e20}, jitter=None)
@example(interval={"seconds": float("nan")}, jitter=None)
@example(interval=float("inf"), jitter=None)
@example(interval=60, jitter=10**15)
def test_any_interval_is_a_schedule_or_the_validators_error(interval: Any, jitter: Any) -> None:
    try:
        spec = validation.schedule(interval=interval, jitter=jitter)
    except ScheduleError:
        return
    built(spec)


@FUZZ
@given(
    date=st.one_of(
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda moment: moment.isoformat()),
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
        st.text(max_size=40),
    )
)
@example(date="9999-12-31T23:59:59-23:59")
@example(date="0001-01-01T00:00:00+23:59")
def test_any_date_is_a_schedule_or_the_validators_error(date: Any) -> None:
    try:
        spec = validation.schedule(date=date)
    except ScheduleError:
        return
    built(spec)


JSON_TEXT = st.one_of(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda value: json.dumps(value)),
    st.integers(1, 60_000).map(lambda depth: "[" * depth + "]" * depth),
    st.text(alphabet='[]{}",:0123456789.eE-+ NaInfityrulsf\\', max_size=200),
)


@FUZZ
@given(text=JSON_TEXT)
def test_any_json_text_parses_within_limits_or_is_refused(text: str) -> None:
    with contextlib.suppress(safejson.JsonInputError):
        safejson.loads(text, max_length=64 * 1024)


@pytest.mark.django_db
@settings(FUZZ, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=JSON_TEXT, kwargs=JSON_TEXT)
@pytest.mark.usefixtures("schedulables")
def test_any_json_arguments_bind_to_the_function_or_are_a_form_error(args: str, kwargs: str) -> None:
    form = JobAddForm(
        data={
            "function": "tests.support.jobs:sleep",
            "job_id": "fuzzed",
            "args": args,
            "kwargs": kwargs,
            "kind": "interval",
            "every": "1",
            "unit": "minutes",
            "max_instances": "1",
            "runs_in": "threads",
        }
    )

    if form.is_valid():
        assert isinstance(form.cleaned_data["args"], list)
    else:
        assert set(form.errors) <= {"args", "kwargs"}
