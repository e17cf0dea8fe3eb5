"""Exclusion calendars: the rule, the dispatcher, the preview, the CLI, the API and the admin."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from django_apscheduler.models import DjangoJob

from scheduling import calendar, calendars, control, job, validation
from scheduling.calendars import CalendarRule, Exclusion, Period, exclusion
from scheduling.declarations import JobDeclarationError
from scheduling.history.rows import Origin
from scheduling.models import Calendar, CalendarPeriod, Execution, ScheduledJob
from scheduling.preview import runs_outside, stored_job_runs
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore, calendar_rules, policies_of
from scheduling.sync import sync, sync_calendars
from tests.support import jobs
from tests.test_dispatch import kinds

BERLIN = ZoneInfo("Europe/Berlin")
HAVANA = ZoneInfo("America/Havana")  # clocks go from 00:00 to 01:00: some days have no midnight
API = "/scheduling/api"
CHRISTMAS_EVE = 'Skipped: calendar "Holidays DE" (Christmas Eve)'


@pytest.fixture
def calendar_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, calendars.CalendarDeclaration]:
    """An empty registry of code calendars for the test."""
    fresh: dict[str, calendars.CalendarDeclaration] = {}
    monkeypatch.setattr(calendars, "registry", fresh)
    return fresh


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# The rule: pure functions


def test_a_whole_day_runs_from_its_midnight_to_the_next_in_the_calendars_zone() -> None:
    rule = CalendarRule("Holidays DE", BERLIN, periods=(Period("Christmas Eve", day=date(2026, 12, 24)),))
    assert rule.exclusion(utc(2026, 12, 23, 22, 59, 59)) is None  # 23:59:59 in Berlin, the 23rd
    assert rule.exclusion(utc(2026, 12, 23, 23, 0)) == Exclusion("Holidays DE", "Christmas Eve")
    assert rule.exclusion(utc(2026, 12, 24, 22, 59, 59)) is not None
    assert rule.exclusion(utc(2026, 12, 24, 23, 0)) is None  # midnight of the 25th in Berlin


@pytest.mark.parametrize(
    ("day", "first", "last"),
    [
        # Clocks go forward: a 23-hour day, 23:00 UTC the day before to 22:00 UTC.
        (date(2026, 3, 29), utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 21, 59, 59)),
        # Clocks go back: a 25-hour day, 22:00 UTC the day before to 23:00 UTC.
        (date(2026, 10, 25), utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 22, 59, 59)),
    ],
)
def test_a_whole_day_on_a_clock_change_lasts_23_or_25_hours(
    day: date, first: datetime, last: datetime
) -> None:
    rule = CalendarRule("Holidays DE", BERLIN, periods=(Period(day=day),))
    assert rule.exclusion(first - timedelta(seconds=1)) is None
    assert rule.exclusion(first) is not None
    assert rule.exclusion(last) is not None
    assert rule.exclusion(last + timedelta(seconds=1)) is None


def test_a_day_without_a_midnight_begins_when_the_clocks_jump_and_one_with_two_ends_after_both() -> None:
    rule = CalendarRule(
        "Havana", HAVANA, periods=(Period(day=date(2026, 3, 8)), Period(day=date(2026, 10, 31)))
    )
    assert rule.exclusion(utc(2026, 3, 8, 4, 59)) is None  # 23:59 CST on the 7th
    assert rule.exclusion(utc(2026, 3, 8, 5, 0)) is not None  # 01:00 CDT: the 8th begins
    # 2026-11-01 00:00-01:00 happens twice in Havana: the 31st ends at the first midnight.
    assert rule.exclusion(utc(2026, 11, 1, 3, 59)) is not None
    assert rule.exclusion(utc(2026, 11, 1, 4, 0)) is None


def test_weekdays_only_excludes_saturday_and_sunday_in_the_calendars_zone() -> None:
    rule = CalendarRule("Weekdays", BERLIN, weekdays_only=True)
    assert rule.exclusion(utc(2026, 12, 4, 22, 59)) is None  # Friday 23:59 in Berlin
    assert rule.exclusion(utc(2026, 12, 4, 23, 0)) == Exclusion("Weekdays", "weekend")  # Saturday 00:00
    assert rule.exclusion(utc(2026, 12, 6, 22, 59)) is not None  # Sunday 23:59
    assert rule.exclusion(utc(2026, 12, 6, 23, 0)) is None  # Monday


def test_a_range_excludes_its_start_but_not_its_end_and_says_when_without_a_label() -> None:
    period = Period(start=utc(2026, 12, 1, 17, 0), end=utc(2026, 12, 1, 19, 0))
    rule = CalendarRule("Blackout", BERLIN, periods=(period,))
    assert rule.exclusion(utc(2026, 12, 1, 16, 59, 59)) is None
    found = rule.exclusion(utc(2026, 12, 1, 17, 0))
    assert found is not None
    assert found.skip_message == 'Skipped: calendar "Blackout" (2026-12-01 18:00 to 2026-12-01 20:00 CET)'
    assert rule.exclusion(utc(2026, 12, 1, 19, 0)) is None


def test_the_first_calendar_of_the_job_that_excludes_the_moment_is_named() -> None:
    weekend = CalendarRule("Weekdays", BERLIN, weekdays_only=True)
    holidays = CalendarRule("Holidays DE", BERLIN, periods=(Period("Christmas Eve", day=date(2026, 12, 24)),))
    found = exclusion(utc(2026, 12, 24, 8, 0), [weekend, holidays])
    assert found is not None
    assert found.skip_message == CHRISTMAS_EVE
    assert exclusion(utc(2026, 12, 23, 8, 0), [weekend, holidays]) is None
    assert exclusion(utc(2026, 12, 26, 8, 0), [weekend, holidays]) == Exclusion("Weekdays", "weekend")


# Declarations and validation


def test_a_calendar_is_declared_in_code_with_dates_periods_and_a_zone(calendar_registry: dict) -> None:
    declared = calendar(
        "Holidays DE",
        dates=[(date(2026, 12, 24), "Christmas Eve"), date(2026, 12, 31)],
        periods=[(datetime(2026, 12, 27, 18, 0), datetime(2026, 12, 28, 6, 0), "Freeze")],
        timezone="Europe/Berlin",
    )
    assert calendar_registry == {"Holidays DE": declared}
    assert declared.periods[0] == Period("Christmas Eve", day=date(2026, 12, 24))
    # A naive start is read in the calendar's zone.
    assert declared.periods[2].start == datetime(2026, 12, 27, 18, 0, tzinfo=BERLIN)
    assert (
        calendar(
            "Holidays DE",
            dates=[(date(2026, 12, 24), "Christmas Eve"), date(2026, 12, 31)],
            periods=[(datetime(2026, 12, 27, 18, 0), datetime(2026, 12, 28, 6, 0), "Freeze")],
            timezone="Europe/Berlin",
        )
        == declared
    )  # the same twice is harmless
    with pytest.raises(validation.InputError, match="declared twice"):
        calendar("Holidays DE", weekdays_only=True)


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({"name": " "}, "name", "must name a calendar"),
        ({"name": "x" * 101}, "name", "at most 100 characters"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone"),
        ({"weekdays_only": "yes"}, "weekdays_only", "true or false"),
        ({"dates": [datetime(2026, 12, 24, 0, 0)]}, "day", "a date"),
        ({"periods": [(utc(2026, 12, 2), utc(2026, 12, 1))]}, "end", "after the start"),
        ({"periods": [(utc(2026, 1, 1), utc(2027, 1, 3))]}, "end", "at most 366 days"),
        ({"periods": [(utc(2026, 1, 1), "tomorrow")]}, "end", "a date and time"),
        ({"dates": [date(2026, 1, 1)] * 1001}, "periods", "at most 1000 periods"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_field(
    calendar_registry: dict, arguments: dict[str, Any], field: str, words: str
) -> None:
    name = arguments.pop("name", "Holidays")
    with pytest.raises(validation.InputError, match=words) as refused:
        calendar(name, **arguments)
    assert refused.value.field == field
    assert calendar_registry == {}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Holidays DE", "a list of at most 10 calendar names"),
        (["a"] * 11, "a list of at most 10 calendar names"),
        (["a", "a"], "distinct"),
        ([""], "must name a calendar"),
        ([3], "text of at most 100 characters"),
    ],
)
def test_a_jobs_calendars_must_be_a_short_list_of_names(registry: dict, value: Any, words: str) -> None:
    with pytest.raises(validation.InputError, match=words):
        validation.options({"calendars": value})
    with pytest.raises(JobDeclarationError, match="calendars"):
        job(id="report", interval={"minutes": 5}, calendars=value)(jobs.succeed)


@pytest.mark.django_db
def test_a_job_may_name_only_a_calendar_that_exists_in_code_or_in_the_database(
    registry: dict, calendar_registry: dict
) -> None:
    job(id="report", interval={"minutes": 5})(jobs.succeed)
    sync(JobStore(), registry.values())
    with pytest.raises(validation.InputError, match='no calendar named "Holidays DE"') as refused:
        control.change("report", calendars=["Holidays DE"])
    assert (refused.value.field, refused.value.code) == ("calendars", "unknown_calendar")
    calendar("Holidays DE", dates=[date(2026, 12, 24)])  # in code, not yet synced
    Calendar.objects.create(name="Blackout")
    control.change("report", calendars=["Holidays DE", "Blackout"])
    assert policies_of(["report"])["report"].calendars == ("Holidays DE", "Blackout")
    assert ScheduledJob.objects.get(id="report").run_policy == {"calendars": ["Holidays DE", "Blackout"]}
    control.change("report", calendars=[])
    assert ScheduledJob.objects.get(id="report").run_policy == {}


# Sync at scheduler start


@pytest.mark.django_db
def test_code_calendars_are_written_at_start_and_one_no_longer_declared_is_kept_editable(
    registry: dict, calendar_registry: dict
) -> None:
    calendar("Holidays DE", dates=[(date(2026, 12, 24), "Christmas Eve")], timezone="Europe/Berlin")
    Calendar.objects.create(name="Holidays DE", description="made in the admin first")
    job(id="report", interval={"minutes": 5}, calendars=["Holidays DE"])(jobs.succeed)
    sync_calendars(calendar_registry.values(), registry.values())
    stored = Calendar.objects.get(name="Holidays DE")
    assert (stored.source, stored.timezone, stored.description) == ("code", "Europe/Berlin", "")
    assert list(stored.periods.values_list("day", "label")) == [(date(2026, 12, 24), "Christmas Eve")]

    calendar_registry.clear()
    calendar("Holidays DE", dates=[date(2026, 12, 25)])
    sync_calendars(calendar_registry.values(), registry.values())
    assert list(stored.periods.values_list("day", flat=True)) == [date(2026, 12, 25)]  # replaced

    calendar_registry.clear()
    sync_calendars(calendar_registry.values(), registry.values())
    assert Calendar.objects.get(name="Holidays DE").source == "admin"


@pytest.mark.django_db
def test_a_declared_job_naming_a_calendar_that_exists_nowhere_stops_the_start(
    registry: dict, calendar_registry: dict
) -> None:
    job(id="report", interval={"minutes": 5}, calendars=["Holidays"])(jobs.succeed)
    with pytest.raises(JobDeclarationError, match="'report' names calendar 'Holidays'"):
        sync_calendars(calendar_registry.values(), registry.values())


# The dispatcher, on a real database


def holidays(**extra: Any) -> Calendar:
    found = Calendar.objects.create(name="Holidays DE", timezone="Europe/Berlin", **extra)
    CalendarPeriod.objects.create(calendar=found, day=date(2026, 12, 24), label="Christmas Eve")
    return found


def declare_daily(registry: dict, **options: Any) -> JobStore:
    job(cron="0 9 * * *", timezone="Europe/Berlin", id="report", **options)(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    return store


@pytest.mark.django_db(transaction=True)
def test_a_fire_inside_a_calendar_is_recorded_skipped_and_the_job_moves_on_with_one_query_more(
    registry: dict, executor: ThreadTarget
) -> None:
    holidays()
    with time_machine.travel(utc(2026, 12, 23, 12, 0)):
        store = declare_daily(registry, calendars=["Holidays DE"])
    now = utc(2026, 12, 24, 8, 0, 30)  # 09:00:30 in Berlin, on Christmas Eve
    job(interval={"hours": 1}, id="other")(jobs.succeed)  # due too, without calendars
    with time_machine.travel(now - timedelta(hours=1, seconds=10)):
        sync(store, registry.values())
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))

    with time_machine.travel(now), CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(now, limit=100)
        dispatcher.dispatch(due, now)

    # The due query, the calendars of the due jobs (one query), the rows, the moves.
    assert kinds(queries) == {"SELECT": 2, "INSERT": 1, "UPDATE": 1}
    skipped = Execution.objects.get(job_id="report")
    assert (skipped.status, skipped.exception) == ("skipped", CHRISTMAS_EVE)
    assert skipped.scheduled_at == utc(2026, 12, 24, 8, 0)
    assert DjangoJob.objects.get(id="report").next_run_time == utc(2026, 12, 25, 8, 0)
    assert executor.wait(10)
    assert Execution.objects.get(job_id="other").status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_fire_outside_the_calendars_runs_and_a_pass_without_calendars_reads_none(
    registry: dict, executor: ThreadTarget
) -> None:
    holidays()
    with time_machine.travel(utc(2026, 12, 22, 12, 0)):
        store = declare_daily(registry, calendars=["Holidays DE"])
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = utc(2026, 12, 23, 8, 0, 30)

    with time_machine.travel(now):
        dispatcher.dispatch(store.get_due_jobs_and_next_run_time(now, limit=100)[0], now)
    assert executor.wait(10)
    assert Execution.objects.get(job_id="report").status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_calendar_deleted_while_a_job_names_it_excludes_nothing(
    registry: dict, executor: ThreadTarget, caplog: pytest.LogCaptureFixture
) -> None:
    calendar_row = holidays()
    with time_machine.travel(utc(2026, 12, 23, 12, 0)):
        store = declare_daily(registry, calendars=["Holidays DE"])
    calendar_row.delete()
    now = utc(2026, 12, 24, 8, 0, 30)
    with time_machine.travel(now):
        Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(
            store.get_due_jobs_and_next_run_time(now, limit=100)[0], now
        )
    assert executor.wait(10)
    assert Execution.objects.get(job_id="report").status == "succeeded"
    assert "names a calendar that no longer exists" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_run_now_is_not_subject_to_calendars(registry: dict, executor: ThreadTarget) -> None:
    holidays(weekdays_only=True)
    with time_machine.travel(utc(2026, 12, 23, 12, 0)):
        store = declare_daily(registry, calendars=["Holidays DE"])
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = utc(2026, 12, 24, 10, 0)
    with time_machine.travel(now):
        dispatcher.run_requested(store.lookup_job("report"), now, Origin("manual", "alice"), lambda: True)
    assert executor.wait(10)
    assert Execution.objects.get(job_id="report").status == "succeeded"


# The preview


@pytest.mark.django_db
def test_the_preview_leaves_out_the_fires_a_calendar_excludes_and_says_why(registry: dict) -> None:
    holidays(weekdays_only=True)
    with time_machine.travel(utc(2026, 12, 22, 12, 0)):
        declare_daily(registry, calendars=["Holidays DE"])
        runs = stored_job_runs("report", 3)
    assert [run.at.astimezone(UTC) for run in runs] == [
        utc(2026, 12, 23, 8, 0),
        utc(2026, 12, 25, 8, 0),
        utc(2026, 12, 28, 8, 0),
    ]
    assert runs[0].note is None
    assert runs[1].note == 'skips 2026-12-24 09:00: calendar "Holidays DE" (Christmas Eve)'
    assert runs[2].note == (
        'skips 2026-12-26 09:00: calendar "Holidays DE" (weekend); '
        'skips 2026-12-27 09:00: calendar "Holidays DE" (weekend)'
    )


def test_the_preview_gives_up_after_a_bounded_number_of_fires() -> None:
    from scheduling.schedules import build_trigger

    everything = CalendarRule(
        "Always", BERLIN, periods=(Period(start=utc(2026, 1, 1), end=utc(2026, 12, 31)),)
    )
    trigger = build_trigger({"interval": {"minutes": 1}})
    assert runs_outside(trigger, 5, [everything], utc(2026, 6, 1)) == []


# Reading calendars: the store, the CLI, the API


@pytest.mark.django_db
def test_the_calendars_of_a_pass_are_read_in_one_query() -> None:
    holidays()
    Calendar.objects.create(name="Weekdays", weekdays_only=True)
    with CaptureQueriesContext(connection) as queries:
        rules = calendar_rules({"Holidays DE", "Weekdays", "Gone"})
    assert len(queries) == 1
    assert set(rules) == {"Holidays DE", "Weekdays"}
    assert rules["Holidays DE"].periods == (Period("Christmas Eve", day=date(2026, 12, 24)),)
    assert rules["Weekdays"] == CalendarRule("Weekdays", rules["Weekdays"].zone, True, ())


@pytest.mark.django_db
def test_the_command_lists_and_shows_calendars(registry: dict) -> None:
    holidays(description="Public holidays")
    CalendarPeriod.objects.create(
        calendar=Calendar.objects.get(), start=utc(2026, 12, 27, 17), end=utc(2026, 12, 28, 5), label="Freeze"
    )
    declare_daily(registry, calendars=["Holidays DE"])
    out = io.StringIO()
    call_command("scheduling", "calendars", "list", stdout=out)
    assert "Holidays DE" in out.getvalue()
    assert "1 day, 1 range" in out.getvalue()

    out = io.StringIO()
    call_command("scheduling", "calendars", "show", "Holidays DE", stdout=out)
    text = out.getvalue()
    assert "time zone: Europe/Berlin" in text
    assert "jobs:      report" in text
    assert "2026-12-24 (Christmas Eve)" in text
    assert "2026-12-27 18:00 to 2026-12-28 06:00 CET (Freeze)" in text

    out = io.StringIO()
    call_command("scheduling", "calendars", "show", "Holidays DE", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["periods"][0] == {"day": "2026-12-24", "start": None, "end": None, "label": "Christmas Eve"}
    assert data["jobs"] == ["report"]

    out = io.StringIO()
    with time_machine.travel(utc(2026, 12, 23, 12, 0)):
        call_command("scheduling", "show", "report", "--next", "2", stdout=out)
    assert "  calendars: Holidays DE" in out.getvalue()
    assert 'skips 2026-12-24 09:00: calendar "Holidays DE" (Christmas Eve)' in out.getvalue()

    with pytest.raises(CommandError, match="No calendar named 'Nope'"):
        call_command("scheduling", "calendars", "show", "Nope")
    with pytest.raises(CommandError, match="needs the name"):
        call_command("scheduling", "calendars", "show")


@pytest.mark.django_db
def test_the_api_lists_and_shows_calendars_and_sets_a_jobs(registry: dict, admin_client: Client) -> None:
    holidays()
    declare_daily(registry)
    listing = admin_client.get(f"{API}/calendars/").json()
    assert [item["name"] for item in listing["calendars"]] == ["Holidays DE"]
    detail = admin_client.get(f"{API}/calendars/Holidays DE/")
    assert detail.status_code == 200
    assert detail.json()["timezone"] == "Europe/Berlin"
    missing = admin_client.get(f"{API}/calendars/Nope/")
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_calendar")

    url = f"{API}/jobs/report/"
    response = admin_client.post(
        url + "reschedule/", {"calendars": ["Holidays DE"]}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert admin_client.get(url).json()["calendars"] == ["Holidays DE"]
    assert admin_client.get(f"{API}/calendars/Holidays DE/").json()["jobs"] == ["report"]
    response = admin_client.post(
        url + "reschedule/", {"calendars": ["Nope"]}, content_type="application/json"
    )
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["code"]) == ("calendars", "unknown_calendar")


# The admin


@pytest.fixture
def berlin_site(settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"


@pytest.mark.django_db
def test_the_calendar_list_reads_in_constant_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    for number in range(20):
        found = Calendar.objects.create(name=f"Calendar {number}", weekdays_only=number % 2 == 0)
        CalendarPeriod.objects.create(calendar=found, day=date(2026, 12, 24))
    with django_assert_max_num_queries(8):
        page = admin_client.get("/admin/scheduling/calendar/")
    assert page.status_code == 200
    assert b"weekends, 1 day" in page.content


def period_form(prefix: str = "periods", **period: str) -> dict[str, str]:
    data = {
        f"{prefix}-TOTAL_FORMS": "1",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    data.update({f"{prefix}-0-{name}": value for name, value in period.items()})
    return data


@pytest.mark.django_db
def test_a_calendar_is_made_in_the_admin_with_its_periods(admin_client: Client, berlin_site: None) -> None:
    data = {
        "name": "Holidays DE",
        "description": "",
        "timezone": "",
        **period_form(day="2026-12-24", label="Xmas"),
    }
    response = admin_client.post("/admin/scheduling/calendar/add/", data)
    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"]
    assert list(CalendarPeriod.objects.values_list("day", "label")) == [(date(2026, 12, 24), "Xmas")]

    data = {
        "name": "Freeze",
        "timezone": "",
        **period_form(start_0="2026-12-28", start_1="06:00", end_0="2026-12-27", end_1="18:00"),
    }
    response = admin_client.post("/admin/scheduling/calendar/add/", data)
    assert response.status_code == 200
    assert "end must be after the start" in response.content.decode()
    response = admin_client.post(
        "/admin/scheduling/calendar/add/", {**data, "timezone": "Mars/Olympus", "name": "X"}
    )
    assert "unknown timezone" in response.content.decode()


@pytest.mark.django_db
def test_the_admin_refuses_a_calendar_name_that_would_spoof_another(admin_client: Client) -> None:
    data = {"name": "\u202ezeerF", "description": "", "timezone": "", **period_form()}
    response = admin_client.post("/admin/scheduling/calendar/add/", data)
    assert response.status_code == 200
    assert "name must not contain a control character (it has &#x27;\\u202e&#x27;)" in response.text
    assert not Calendar.objects.exists()


@pytest.mark.django_db
def test_a_code_calendar_is_read_only_and_one_a_job_names_cannot_be_deleted(
    admin_client: Client, registry: dict, calendar_registry: dict
) -> None:
    calendar("Code", dates=[date(2026, 12, 24)])
    sync_calendars(calendar_registry.values(), [])
    code = Calendar.objects.get(name="Code")
    page = admin_client.get(f"/admin/scheduling/calendar/{code.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert (
        admin_client.post(f"/admin/scheduling/calendar/{code.pk}/change/", {"name": "Hacked"}).status_code
        == 403
    )

    used = holidays()
    declare_daily(registry, calendars=["Holidays DE"])
    page = admin_client.get(f"/admin/scheduling/calendar/{used.pk}/delete/")
    assert "named by the job(s) report" in page.content.decode()
    admin_client.post(f"/admin/scheduling/calendar/{used.pk}/delete/", {"post": "yes"})
    assert Calendar.objects.filter(pk=used.pk).exists()


@pytest.mark.django_db
def test_the_job_form_assigns_calendars_and_the_job_page_previews_without_them(
    registry: dict, admin_client: Client
) -> None:
    tomorrow = datetime.now(BERLIN).date() + timedelta(days=1)
    found = Calendar.objects.create(name="Holidays DE", timezone="Europe/Berlin")
    CalendarPeriod.objects.create(calendar=found, day=tomorrow, label="Christmas Eve")
    declare_daily(registry)
    url = "/admin/scheduling/job/report/change/"
    page = admin_client.get(url)
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(kind="cron", cron="0 9 * * *", time_zone="Europe/Berlin", coalesce="on")
    data["calendars"] = ["Holidays DE"]
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert policies_of(["report"])["report"].calendars == ("Holidays DE",)
    with CaptureQueriesContext(connection) as queries:
        shown = admin_client.get(url).content.decode().replace("&quot;", '"')
    calendar_queries = [query for query in queries.captured_queries if "scheduling_calendar" in query["sql"]]
    assert len(calendar_queries) == 2  # the form's choices, and the preview's calendars
    assert f'skips {tomorrow:%Y-%m-%d} 09:00: calendar "Holidays DE" (Christmas Eve)' in shown


@pytest.mark.django_db
def test_a_calendar_a_job_names_cannot_be_renamed_in_the_admin(admin_client: Client, registry: dict) -> None:
    used = holidays()
    declare_daily(registry, calendars=["Holidays DE"])
    data = {"name": "Feiertage", "description": "", "timezone": "", **period_form(day="2026-12-26")}
    response = admin_client.post(f"/admin/scheduling/calendar/{used.pk}/change/", data)
    assert response.status_code == 200
    assert "Jobs name this calendar (report): change their calendars first" in response.content.decode()
    assert Calendar.objects.get(pk=used.pk).name == "Holidays DE"


# In another language: shown translated, stored in English


def test_a_range_is_shown_in_the_active_language_and_its_skip_is_stored_in_english() -> None:
    period = Period(start=utc(2026, 12, 1, 17, 0), end=utc(2026, 12, 1, 19, 0))
    rule = CalendarRule("Blackout", BERLIN, weekdays_only=True, periods=(period,))
    with translation.override("ja"):
        assert period.describe(BERLIN) == "2026-12-01 18:00 から 2026-12-01 20:00 CET まで"
        found = rule.exclusion(utc(2026, 12, 1, 17, 0))
        weekend = rule.exclusion(utc(2026, 12, 5, 12, 0))
        assert found is not None
        assert weekend is not None
        assert found.text == "カレンダー「Blackout」(2026-12-01 18:00 から 2026-12-01 20:00 CET まで)"
        assert found.skip_message == 'Skipped: calendar "Blackout" (2026-12-01 18:00 to 2026-12-01 20:00 CET)'
        assert weekend.text == "カレンダー「Blackout」(週末)"
        assert weekend.skip_message == 'Skipped: calendar "Blackout" (weekend)'
    with translation.override("zh-hans"):
        assert period.describe(BERLIN) == "2026-12-01 18:00 至 2026-12-01 20:00 CET"


@pytest.mark.django_db
def test_the_preview_the_command_and_the_admin_show_periods_in_the_active_language(
    registry: dict, admin_client: Client
) -> None:
    holidays()
    row = CalendarPeriod.objects.create(
        calendar=Calendar.objects.get(), start=utc(2026, 12, 27, 17), end=utc(2026, 12, 28, 5), label="Freeze"
    )
    declare_daily(registry, calendars=["Holidays DE"])
    out = io.StringIO()
    with translation.override("ja"):
        call_command("scheduling", "calendars", "show", "Holidays DE", stdout=out)
        assert str(row) == "2026-12-27 17:00:00+00:00 から 2026-12-28 05:00:00+00:00 まで (Freeze)"
        with time_machine.travel(utc(2026, 12, 22, 12, 0)):
            runs = stored_job_runs("report", 2)
    assert "2026-12-27 18:00 から 2026-12-28 06:00 CET まで (Freeze)" in out.getvalue()
    assert runs[1].note == "2026-12-24 09:00 をスキップ: カレンダー「Holidays DE」(Christmas Eve)"
    assert str(row) == "2026-12-27 17:00:00+00:00 to 2026-12-28 05:00:00+00:00 (Freeze)"
    with translation.override(translation.get_language()):
        page = admin_client.get(
            f"/admin/scheduling/calendar/{row.calendar_id}/change/", headers={"accept-language": "zh-hans"}
        ).text
    assert "2026-12-27 17:00:00+00:00 至 2026-12-28 05:00:00+00:00 (Freeze)" in page
