"""Time that never lies: the crontab rule, jitter, naive dates and the preview, at every level a user
meets them (trigger, store, command, admin, API). The Hypothesis counterexamples are named here.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import pickle
import random
import zoneinfo

import pytest
from apscheduler.job import Job
from cronsim import CronSim
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from scheduling import job, tokens
from scheduling.crontab import CrontabTrigger
from scheduling.legacy import old_meaning
from scheduling.preview import preview_schedule
from scheduling.schedules import WallClockCronTrigger, build_trigger, normalize_spec, parse_crontab
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
LORD_HOWE = zoneinfo.ZoneInfo("Australia/Lord_Howe")
# The night clocks go back in Berlin: 03:00 CEST becomes 02:00 CET at 01:00 UTC.
FALL_BACK = dt.datetime(2026, 10, 25, 1, tzinfo=UTC)


def scheduler_fires(trigger, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Fire times as APScheduler's own Job._get_run_times walks them (the loop that hung).

    Private on purpose: what is tested is APScheduler's loop over our triggers, so the test runs
    that loop itself, not a copy of it that could drift from the one the scheduler calls.
    """
    holder = Job.__new__(Job)
    holder.trigger = trigger
    holder.next_run_time = trigger.get_next_fire_time(None, start)
    return holder._get_run_times(end)


def local(moments: list[dt.datetime], zone: dt.tzinfo = BERLIN) -> list[str]:
    return [moment.astimezone(zone).strftime("%H:%M %Z") for moment in moments]


# The reports -------------------------------------------------------------------------


def test_hourly_jitter_in_the_repeated_hour_never_goes_backwards_and_runs_once_per_slot() -> None:
    random.seed(12)
    trigger = build_trigger({"cron": "0 * * * *", "timezone": "Europe/Berlin", "jitter": 120})
    start = dt.datetime(2026, 10, 24, 23, tzinfo=UTC)

    fires = scheduler_fires(trigger, start, start + dt.timedelta(hours=5, minutes=30))

    assert fires == sorted(set(fires))
    slots = ["01:00 CEST", "02:00 CEST", "02:00 CET", "03:00 CET", "04:00 CET", "05:00 CET"]
    hours = [m.replace(minute=0, second=0, microsecond=0) for m in fires]  # in UTC: Berlin's hours are whole
    assert local(hours) == slots
    assert all(0 <= (m.minute * 60 + m.second) <= 120 for m in fires)


def test_a_daily_0230_job_with_jitter_runs_once_on_the_night_clocks_go_back() -> None:
    random.seed(7)
    trigger = build_trigger({"cron": "30 2 * * *", "timezone": "Europe/Berlin", "jitter": 60})
    start = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)

    fires = scheduler_fires(trigger, start, start + dt.timedelta(days=1))

    assert len(fires) == 1
    assert fires[0].astimezone(BERLIN).strftime("%Z") == "CEST"


def test_fixed_times_in_the_repeated_hour_run_once_at_the_first_occurrence() -> None:
    trigger = build_trigger({"cron": "0,30 2 * * *", "timezone": "Europe/Berlin"})
    start = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)

    fires = scheduler_fires(trigger, start, start + dt.timedelta(days=1))

    assert local(fires) == ["02:00 CEST", "02:30 CEST"]


def test_a_fixed_time_in_the_spring_gap_runs_at_the_first_instant_after_the_jump() -> None:
    trigger = build_trigger({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    start = dt.datetime(2026, 3, 28, 12, tzinfo=UTC)

    assert local(scheduler_fires(trigger, start, start + dt.timedelta(days=1))) == ["03:00 CEST"]


def test_a_naive_one_off_date_is_read_in_the_jobs_time_zone() -> None:
    spec = normalize_spec(date="2026-03-01T09:00", timezone_name="America/New_York")

    assert spec["date"] == "2026-03-01T09:00:00"  # kept as written
    assert build_trigger(spec).run_date.astimezone(UTC) == dt.datetime(2026, 3, 1, 14, tzinfo=UTC)


def test_a_naive_date_in_a_gap_or_a_repeated_hour_is_resolved_as_cron_times_are() -> None:
    gap = build_trigger({"date": "2026-03-08T02:30", "timezone": "America/New_York"})
    repeated = build_trigger({"date": "2026-11-01T01:30", "timezone": "America/New_York"})

    assert gap.run_date.isoformat() == "2026-03-08T03:00:00-04:00"
    assert repeated.run_date.isoformat() == "2026-11-01T01:30:00-04:00"  # the first of two


def test_crontab_day_rule_either_field_matches_unless_one_starts_with_a_star() -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=UTC)  # a Monday

    def days(expression: str) -> list[str]:
        trigger = parse_crontab(expression, UTC)
        return [f"{m:%d %a}" for m in scheduler_fires(trigger, start, start + dt.timedelta(days=14))]

    assert days("0 0 1 * 1") == ["01 Mon", "08 Mon", "15 Mon"]  # the 1st, and every Monday
    assert days("0 0 10 * 1") == ["01 Mon", "08 Mon", "10 Wed", "15 Mon"]
    assert days("0 0 */2 * 1") == ["01 Mon", "15 Mon"]  # '*' first: both must match
    assert days("0 0 10 * *") == ["10 Wed"]


def test_intervals_count_elapsed_time_and_jitter_stays_in_its_slot() -> None:
    random.seed(3)
    trigger = build_trigger({"interval": {"minutes": 30}, "timezone": "Europe/Berlin", "jitter": 3600})
    trigger.start_date = FALL_BACK - dt.timedelta(hours=2)

    fires = scheduler_fires(trigger, FALL_BACK - dt.timedelta(hours=2), FALL_BACK + dt.timedelta(hours=2))

    slots = [FALL_BACK + dt.timedelta(minutes=30 * n) for n in range(-4, 4)]
    assert len(fires) == len(slots)
    for fire, slot in zip(fires, slots, strict=True):
        assert slot <= fire < slot + dt.timedelta(minutes=30)


# Counterexamples found by Hypothesis (tests/test_time_properties.py) ---------------------------


def test_counterexample_1_started_in_the_second_occurrence_a_fixed_time_waits_for_the_next_day() -> None:
    # cronsim, started at 02:10 CET (the second 02:10), answers 02:30 CEST: 40 minutes *before*
    # the start. A scheduler must never; that wall-clock time has had its run.
    start = dt.datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET
    assert next(CronSim("30 2 * * *", start.astimezone(BERLIN))).astimezone(UTC) < start

    slot = parse_crontab("30 2 * * *", BERLIN).next_slot(start)

    assert slot is not None
    assert slot.at.isoformat() == "2026-10-26T02:30:00+01:00"


def test_counterexample_2_elapsed_minutes_just_after_lord_howes_half_hour_gap() -> None:
    # cronsim rounds 02:45 down to 02:00 (which does not exist), adds an hour in UTC, lands on
    # 03:30 and skips 03:00 and 03:20. Every instant whose clock reads 03:x0 counts.
    start = dt.datetime(2026, 10, 3, 15, 45, tzinfo=UTC)  # 02:45 +11:00, just after the jump
    trigger = parse_crontab("*/20 3 * * *", LORD_HOWE)

    slots, cursor = [], start
    for _ in range(3):
        slot = trigger.next_slot(cursor)
        assert slot is not None
        slots.append(slot.at.strftime("%d %H:%M"))
        cursor = slot.at

    assert slots == ["04 03:00", "04 03:20", "04 03:40"]


def test_counterexample_3_a_one_value_range_with_a_step_is_that_value() -> None:
    # cronsim reads "1-1/1" as "1/1" (Monday to Sunday); crontab(5) and we read it as Monday.
    trigger = parse_crontab("0 0 * * 1-1/1", UTC)
    start = dt.datetime(2026, 6, 2, tzinfo=UTC)  # a Tuesday

    assert [f"{m:%a}" for m in scheduler_fires(trigger, start, start + dt.timedelta(days=14))] == [
        "Mon",
        "Mon",
    ]


def test_counterexample_4_a_step_longer_than_its_range_is_accepted_as_cron_does() -> None:
    # APScheduler refuses "12/1" (step longer than the range 12-12); cron and cronsim accept it.
    trigger = parse_crontab("0 0 1 12/1 *", UTC)
    start = dt.datetime(2026, 6, 1, tzinfo=UTC)

    slot = trigger.next_slot(start)
    assert slot is not None
    assert slot.at == dt.datetime(2026, 12, 1, tzinfo=UTC)


def test_counterexample_6_elapsed_hours_just_after_chathams_quarter_to_three_jump() -> None:
    # Chatham's clocks jump from 02:45 to 03:45. cronsim rounds 03:45 down to 03:00 (inside the
    # gap), adds an hour in UTC, lands on 05:00 and loses the whole 04:00 hour of "* */2 * * *".
    chatham = zoneinfo.ZoneInfo("Pacific/Chatham")
    start = dt.datetime(2000, 9, 30, 14, tzinfo=UTC)  # 03:45 +13:45, just after the jump
    assert next(CronSim("* */2 * * *", start.astimezone(chatham))).strftime("%H:%M") == "06:00"

    slot = parse_crontab("* */2 * * *", chatham).next_slot(start)

    assert slot is not None
    assert slot.at.isoformat() == "2000-10-01T04:00:00+13:45"


def test_counterexample_5_a_sunday_to_sunday_range_is_sunday_alone() -> None:
    # "0-0" was read like "5-0" (up to Sunday as 7): the whole week.
    trigger = parse_crontab("0 0 * */3 0-0", BERLIN)
    start = dt.datetime(2000, 3, 26, 1, tzinfo=UTC)  # Sunday 03:00 CEST

    slot = trigger.next_slot(start)
    assert slot is not None
    assert slot.at.isoformat() == "2000-04-02T00:00:00+02:00"  # a Sunday
    assert [
        f"{m:%a}"
        for m in scheduler_fires(parse_crontab("0 0 * * sun-sun", UTC), start, start + dt.timedelta(days=14))
    ] == ["Sun", "Sun"]


# Stored jobs --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_triggers_pickle_into_the_store_and_keep_their_rules(registry: dict) -> None:
    job(cron="0 0 1 * 1", timezone="Europe/Berlin", jitter=30, id="monthly")(jobs.succeed)
    job(date="2030-03-31T02:30", timezone="Europe/Berlin", id="once")(jobs.succeed)
    job(interval={"minutes": 5}, jitter=600, id="often")(jobs.succeed)
    sync(JobStore(), registry.values())

    monthly = JobStore().lookup_job("monthly").trigger
    once = JobStore().lookup_job("once").trigger
    often = JobStore().lookup_job("often").trigger

    assert isinstance(monthly, CrontabTrigger)
    assert (monthly.day_or, monthly.wall_clock, monthly.expression) == (True, True, "0 0 1 * 1")
    assert once.wall == dt.datetime(2030, 3, 31, 2, 30)
    assert once.run_date.isoformat() == "2030-03-31T03:00:00+02:00"
    assert often.jitter_window() == 300 - 1e-6
    assert pickle.loads(pickle.dumps(monthly)).__getstate__() == monthly.__getstate__()  # noqa: S301


def store_old_style(registry: dict, trigger) -> None:
    job(cron="0 0 * * *", id="legacy", timezone="Europe/Berlin")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    store.modify_job(store.lookup_job("legacy"), trigger=trigger)


@pytest.mark.django_db
def test_a_job_stored_with_the_old_rule_keeps_it_and_the_admin_flags_it(
    registry: dict, admin_client: Client, django_assert_max_num_queries
) -> None:
    old = WallClockCronTrigger(day="1", day_of_week="mon", hour="0", minute="0", timezone=BERLIN)
    store_old_style(registry, old)

    assert type(JobStore().lookup_job("legacy").trigger) is WallClockCronTrigger  # not rewritten
    assert "either does" in (old_meaning(old) or "")
    with django_assert_max_num_queries(12):
        page = admin_client.get("/admin/scheduling/job/legacy/change/")
    assert "Stored with the cron rule of an earlier version" in page.text


@pytest.mark.django_db
def test_an_old_rule_that_means_the_same_is_not_flagged(registry: dict) -> None:
    same = WallClockCronTrigger(hour="12", minute="0", timezone=BERLIN)
    assert old_meaning(same) is None
    hourly = WallClockCronTrigger(minute="0", timezone=BERLIN)  # skipped the repeated hour
    assert "clock change" in (old_meaning(hourly) or "")


# Preview: command, admin, API ----------------------------------------------------------------


def preview(*args: str) -> str:
    out = io.StringIO()
    call_command("scheduling", "preview", *args, stdout=out)
    return out.getvalue()


def test_preview_prints_offsets_and_marks_runs_a_clock_change_moved() -> None:
    text = preview(
        "--cron", "0,30 2 * * *", "--timezone", "Europe/Berlin", "--start", "2026-10-24T00:00", "--count", "4"
    )

    assert text.splitlines() == [
        "2026-10-24 02:00:00 +02:00 CEST",
        "2026-10-24 02:30:00 +02:00 CEST",
        "2026-10-25 02:00:00 +02:00 CEST  *  02:00 — clocks go back; runs once",
        "2026-10-25 02:30:00 +02:00 CEST  *  02:30 — clocks go back; runs once",
        "* moved by a clock change",
    ]


def test_preview_json_for_scripts() -> None:
    data = json.loads(
        preview(
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--start",
            "2026-03-28T12:00",
            "--count",
            "1",
            "--json",
        )
    )

    assert data == {
        "runs": [
            {
                "at": "2026-03-29T03:00:00+02:00",
                "utc": "2026-03-29T01:00:00+00:00",
                "moved_by_clock_change": True,
                "note": "02:30 does not exist — clocks go forward; runs at 03:00 CEST",
            }
        ]
    }


def test_preview_of_intervals_dates_and_capped_jitter() -> None:
    note = "02:30 happens twice — clocks go back; intervals count elapsed time"
    assert preview(
        "--interval", "1h", "--timezone", "Europe/Berlin", "--start", "2026-10-25T01:30", "--count", "2"
    ).splitlines() == [
        f"2026-10-25 02:30:00 +02:00 CEST     {note}",
        f"2026-10-25 02:30:00 +01:00 CET     {note}",
    ]
    assert preview(
        "--date", "2026-11-01T01:30", "--timezone", "America/New_York", "--start", "2026-10-01T00:00"
    ) == (
        "2026-11-01 01:30:00 -04:00 EDT  *  "
        "2026-11-01 01:30 happens twice — clocks go back; runs at the first, 01:30 EDT\n"
        "* moved by a clock change\n"
    )
    capped = preview(
        "--cron",
        "*/5 * * * *",
        "--timezone",
        "UTC",
        "--start",
        "2026-01-01T00:00",
        "--count",
        "1",
        "--jitter",
        "600",
    )
    assert (
        capped
        == "2026-01-01 00:00:00 +00:00 UTC     jitter capped to 300 s (of 600 s) to end before the next run\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "invalid cron expression '61 * * * *': '61' is not in 0-59"),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (
            ["--cron", "0 3 * * *", "--start", "yesterday"],
            "start 'yesterday' is not an ISO 8601 date and time",
        ),
    ],
)
def test_preview_names_what_is_wrong(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("*", r"\*")):
        preview(*args)


@pytest.mark.django_db
def test_show_next_admin_and_api_list_the_same_runs_and_flags(registry: dict, admin_client: Client) -> None:
    job(cron="30 2 * * *", timezone="Europe/Berlin", id="nightly")(jobs.succeed)
    sync(JobStore(), registry.values())
    expected = [
        run.as_dict() for run in preview_schedule({"cron": "30 2 * * *", "timezone": "Europe/Berlin"}, 5)
    ]

    out = io.StringIO()
    call_command("scheduling", "show", "nightly", "--next", "5", "--json", stdout=out)
    from_cli = json.loads(out.getvalue())["next_runs"]
    key = tokens.create(admin_client.get("/admin/").wsgi_request.user, "t")[1]
    from_api = (
        Client().get("/scheduling/api/jobs/nightly/", headers={"Authorization": f"Bearer {key}"}).json()
    )
    page = admin_client.get("/admin/scheduling/job/nightly/change/").text

    assert from_cli == from_api["next_runs"] == expected
    assert all(run["at"].replace("T", " ")[:19] in page for run in expected)


def test_preview_of_a_cron_expression_is_cronsims_list() -> None:
    runs = preview_schedule({"cron": "0 */2 * * *", "timezone": "Europe/Berlin"}, 6, "2026-10-24T23:00")
    oracle = CronSim("0 */2 * * *", dt.datetime(2026, 10, 24, 23, tzinfo=BERLIN))

    assert [run.at.astimezone(UTC) for run in runs] == [next(oracle).astimezone(UTC) for _ in range(6)]
