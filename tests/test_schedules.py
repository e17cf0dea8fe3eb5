from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from scheduling.schedules import ScheduleError, build_trigger, describe, normalize_spec, relative

UTC = zoneinfo.ZoneInfo("UTC")


def fires(spec: dict, start: dt.datetime, count: int = 3) -> list[dt.datetime]:
    trigger = build_trigger(spec)
    times, previous, now = [], None, start
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        times.append(previous.astimezone(trigger.timezone))
        now = previous
    return times


def test_crontab_weekday_numbers_count_from_sunday_like_cron() -> None:
    monday = dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert [t.strftime("%a %H:%M") for t in fires({"cron": "0 3 * * 0"}, monday, 2)] == [
        "Sun 03:00",
        "Sun 03:00",
    ]
    assert fires({"cron": "0 3 * * 7"}, monday, 1)[0].strftime("%a") == "Sun"
    assert [t.strftime("%a") for t in fires({"cron": "0 9 * * 1-5"}, monday, 6)] == [
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
        "Mon",
    ]
    assert [t.strftime("%a") for t in fires({"cron": "0 9 * * */2"}, monday, 4)] == [
        "Tue",
        "Thu",
        "Sat",
        "Sun",
    ]
    assert [t.strftime("%a") for t in fires({"cron": "0 9 * * fri-sun"}, monday, 3)] == ["Fri", "Sat", "Sun"]


def test_crontab_fields_and_macros() -> None:
    start = dt.datetime(2026, 11, 23, 10, 7, tzinfo=UTC)
    assert fires({"cron": "*/15 * * * *"}, start, 2) == [
        dt.datetime(2026, 11, 23, 10, 15, tzinfo=UTC),
        dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC),
    ]
    assert fires({"cron": "@daily"}, start, 1) == [dt.datetime(2026, 11, 24, tzinfo=UTC)]


def test_apscheduler_cron_fields_allow_seconds() -> None:
    start = dt.datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)
    assert fires({"cron": {"second": "*/10"}}, start, 2) == [
        dt.datetime(2026, 11, 23, 10, 0, 10, tzinfo=UTC),
        dt.datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC),
    ]


def test_cron_respects_the_job_timezone() -> None:
    start = dt.datetime(2026, 11, 23, tzinfo=UTC)
    (first,) = fires({"cron": "0 3 * * *", "timezone": "Europe/Berlin"}, start, 1)
    assert first.astimezone(UTC) == dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * * *"}, "must have 5 fields"),
        ({"cron": "0 3 * * 8"}, "invalid weekday '8'"),
        ({"cron": "0 3 * * 5-1"}, "runs backwards"),
        ({"cron": {"secnd": "*/10"}}, "unknown cron option 'secnd'"),
        ({"interval": {"minutes": 0}}, "longer than zero"),
        ({"interval": {"mins": 5}}, "unknown interval option 'mins'"),
        ({"interval": -5}, ">= 0"),
        ({"date": "next tuesday"}, "not an ISO 8601"),
        ({"cron": "* * * * *", "timezone_name": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "interval": 5}, "exactly one of"),
        ({}, "exactly one of"),
    ],
)
def test_bad_schedules_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("*", r"\*").replace("(", r"\(")):
        normalize_spec(**kwargs)


def test_specs_are_json_friendly() -> None:
    assert normalize_spec(interval=dt.timedelta(minutes=90)) == {"interval": {"hours": 1, "minutes": 30}}
    assert normalize_spec(interval=30) == {"interval": {"seconds": 30}}
    assert normalize_spec(date="2026-12-01T10:00:00+01:00") == {"date": "2026-12-01T10:00:00+01:00"}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"cron": "0 3 * * *"}, "At 03:00, every day"),
        ({"cron": "*/5 * * * *"}, "Every 5 minutes"),
        ({"cron": "0 9 * * 1-5"}, "At 09:00, Monday through Friday"),
        ({"cron": "30 2 * * 0"}, "At 02:30, only on Sunday"),
        ({"cron": {"second": "*/10"}}, "Every 10 seconds"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Berlin"}, "At 03:00, every day (Europe/Berlin)"),
        ({"interval": {"minutes": 5}}, "Every 5 minutes"),
        ({"interval": {"seconds": 1}}, "Every second"),
        ({"interval": {"hours": 1, "minutes": 30}}, "Every 1 hour 30 minutes"),
        ({"interval": {"days": 1}}, "Every day"),
        ({"date": "2026-12-01T10:00:00+00:00"}, "Once, at 2026-12-01 10:00:00 UTC"),
        ({"cron": {"day": "last fri"}}, "Cron: day='last fri'"),
    ],
)
def test_schedules_in_words(spec: dict, words: str) -> None:
    assert describe(build_trigger(spec)) == words


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (dt.timedelta(seconds=12), "in 12\xa0s"),
        (dt.timedelta(seconds=-40), "40\xa0s ago"),
        (dt.timedelta(minutes=4, seconds=10), "in 4\xa0minutes"),
        (dt.timedelta(hours=-3, minutes=-5), "3\xa0hours ago"),
        (dt.timedelta(0), "now"),
    ],
)
def test_relative_hints(offset: dt.timedelta, words: str) -> None:
    now = dt.datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert relative(now + offset, now) == words


def fires_between(spec: dict, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Travel through the trigger's fire times from start to end, as the scheduler would."""
    trigger = build_trigger(spec)
    times: list[str] = []
    previous, now = None, start
    while True:
        previous = trigger.get_next_fire_time(previous, now)
        if previous is None or previous > end:
            return times
        times.append(previous.astimezone(trigger.timezone).isoformat())
        now = previous


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        # Clocks go back: 02:30 happens twice in Berlin; it runs once, at the first.
        ("Europe/Berlin", dt.date(2026, 10, 25), ["2026-10-25T02:30:00+02:00"]),
        # Clocks go forward: 02:30 does not exist; it runs once, at the first instant after the
        # jump (03:00), as Debian cron does.
        ("Europe/Berlin", dt.date(2026, 3, 29), ["2026-03-29T03:00:00+02:00"]),
        ("America/New_York", dt.date(2026, 11, 1), ["2026-11-01T02:30:00-05:00"]),
        ("America/New_York", dt.date(2026, 3, 8), ["2026-03-08T03:00:00-04:00"]),
    ],
)
def test_a_daily_job_runs_exactly_once_on_daylight_saving_days(
    zone: str, day: dt.date, expected: list
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(), tz)

    fired = fires_between({"cron": "30 2 * * *", "timezone": zone}, start, start + dt.timedelta(hours=23))

    assert fired == expected


@pytest.mark.parametrize(
    ("zone", "day", "repeated"),
    [("Europe/Berlin", dt.date(2026, 10, 25), "02:00"), ("America/New_York", dt.date(2026, 11, 1), "01:00")],
)
def test_an_hourly_job_follows_elapsed_time_and_runs_in_both_repeated_hours(
    zone: str, day: dt.date, repeated: str
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(), tz)

    fired = fires_between({"cron": "0 * * * *", "timezone": zone}, start, start + dt.timedelta(hours=6))

    wall_clock = [moment[11:16] for moment in fired]
    assert wall_clock.count(repeated) == 2  # "0 * * * *" has a '*' hour: every hour that passes
    gaps = {
        (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()
        for a, b in itertools.pairwise(fired)
    }
    assert gaps == {3600.0}


def test_an_hourly_job_skips_the_hour_that_does_not_exist_when_clocks_go_forward() -> None:
    tz = zoneinfo.ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 3, 29, tzinfo=tz)

    fired = fires_between(
        {"cron": "0 * * * *", "timezone": "Europe/Berlin"}, start, start + dt.timedelta(hours=4)
    )

    assert [moment[11:16] for moment in fired] == ["00:00", "01:00", "03:00", "04:00"]
