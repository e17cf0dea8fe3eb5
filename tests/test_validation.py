"""One set of limits for job options and schedules: @job, scheduling.control and the CLI refuse
the security review's inputs in the same words, and nothing is stored."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job, validation
from scheduling.declarations import JobDeclarationError
from scheduling.models import Calendar, Execution
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

pytestmark = pytest.mark.django_db

GRACE = "misfire_grace_time must be a whole number of seconds from 1 to 2678400 (31 days), or none, not "
JITTER = "jitter must be a whole number of seconds from 0 to 86400 (1 day), not "
INTERVAL = "must be from 1 second to 315532800 seconds (10 years), not "
DATE = "date must be a date and time from 1970-01-02 to 9999-12-30, not "

# The inputs the security review sent, with the error each must get now.
REFUSED = [
    (
        {"interval": 1, "misfire_grace_time": 100_000_000_000_000},
        "misfire_grace_time",
        GRACE + "100000000000000",
    ),
    ({"interval": 60, "jitter": 10**15}, "jitter", JITTER + "1000000000000000"),
    ({"interval": float("inf")}, "interval.seconds", "interval.seconds " + INTERVAL + "inf"),
    ({"interval": {"seconds": float("nan")}}, "interval.seconds", "interval.seconds " + INTERVAL + "nan"),
    ({"interval": {"weeks": 1e20}}, "interval.weeks", "interval.weeks " + INTERVAL + "1e+20"),
    ({"interval": 0.5}, "interval", "interval " + INTERVAL + "0.5"),
    # Too large for a float: math.isfinite raised OverflowError.
    ({"interval": {"minutes": 10**400}}, "interval.minutes", "interval.minutes " + INTERVAL + "1000000"),
    ({"date": "9999-12-31T23:59:59-23:59"}, "date", DATE + "'9999-12-31T23:59:59-23:59'"),
    ({"date": "1970-01-01T00:00:00+14:00"}, "date", DATE + "'1970-01-01T00:00:00+14:00'"),
    ({"cron": ",".join(["1"] * 150_000) + " * * * *"}, "cron", "cron must be text of at most 256 characters"),
    (
        {"cron": {"minute": ",".join(["1"] * 150_000)}},
        "cron.minute",
        "cron.minute must be text of at most 128",
    ),
    (
        {"interval": 60, "max_instances": 10**6},
        "max_instances",
        "max_instances must be a whole number from 1 to",
    ),
    ({"interval": 60, "max_instances": True}, "max_instances", "max_instances must be a whole number"),
    (
        {"cron": "0 3 * * *", "timezone": "Z" * 65},
        "timezone",
        "timezone must be text of at most 64 characters",
    ),
]


def _split(given: dict) -> tuple[dict, dict]:
    options = {key: given[key] for key in ("misfire_grace_time", "max_instances") if key in given}
    schedule = {key: value for key, value in given.items() if key not in options}
    return schedule, options


@pytest.mark.parametrize(("given", "field", "message"), REFUSED)
def test_the_validator_names_the_field_and_the_limit(given: dict, field: str, message: str) -> None:
    schedule, options = _split(given)
    keywords = {("timezone_name" if key == "timezone" else key): value for key, value in schedule.items()}

    def check() -> None:
        validation.options(options)
        validation.schedule(**keywords)

    with pytest.raises(validation.InputError) as error:
        check()

    assert (error.value.field, str(error.value)[: len(message)]) == (field, message)


@pytest.mark.parametrize(("given", "field", "message"), REFUSED)
def test_job_refuses_them_where_the_job_is_declared(
    registry: dict, given: dict, field: str, message: str
) -> None:
    with pytest.raises(JobDeclarationError, match=r"^Job 'bad': ") as error:
        job(id="bad", **given)(jobs.succeed)

    assert message in str(error.value)
    assert "bad" not in registry


@pytest.mark.parametrize(("given", "field", "message"), REFUSED)
def test_control_change_refuses_them_and_stores_nothing(
    registry: dict, given: dict, field: str, message: str
) -> None:
    job(interval=300, id="steady")(jobs.succeed)
    sync(JobStore(), registry.values())
    before = DjangoJob.objects.get(id="steady").job_state
    schedule, options = _split(given)
    spec = {("timezone" if key == "timezone" else key): value for key, value in schedule.items()}
    if isinstance(spec.get("interval"), (int, float)):
        spec["interval"] = {"seconds": spec["interval"]}

    with pytest.raises(validation.InputError, match=f"^{field}"):
        control.change("steady", schedule=spec, **options)

    assert DjangoJob.objects.get(id="steady").job_state == before
    # The scheduler still reads the job as it was.
    assert JobStore().lookup_job("steady").trigger.interval == timedelta(minutes=5)


def test_a_paused_job_refused_a_huge_jitter_can_still_be_resumed(registry: dict) -> None:
    job(interval=300, id="steady")(jobs.succeed)
    sync(JobStore(), registry.values())
    control.pause("steady")

    with pytest.raises(validation.InputError, match=r"^jitter must be"):
        control.reschedule("steady", interval=60, jitter=10**15)
    control.resume("steady")

    assert JobStore().lookup_job("steady").next_run_time > timezone.now()


def test_the_limits_themselves_are_accepted(registry: dict) -> None:
    job(
        interval={"days": 3652},
        id="edge",
        misfire_grace_time=31 * 86400,
        jitter=86400,
        max_instances=1000,
    )(jobs.succeed)
    job(date="9999-12-30T23:59:59+14:00", id="late", misfire_grace_time=None)(jobs.succeed)
    job(interval=1, id="fast")(jobs.succeed)

    sync(JobStore(), registry.values())

    assert {row.id for row in DjangoJob.objects.all()} == {"edge", "late", "fast"}


def test_control_add_refuses_an_overlong_id_and_stores_nothing() -> None:
    with pytest.raises(
        validation.InputError, match=r"^job_id must be text of at most 255 characters, not 300"
    ):
        control.add("x" * 300, "tests.support.jobs:succeed", schedule={"interval": {"minutes": 1}})

    assert not DjangoJob.objects.exists()


# The separators end a line where the id is shown; the bidirectional controls reorder it.
SPOOFING = [
    "line\u2028break",
    "para\u2029graph",
    "\u202enightly",
    "a\u202ab",
    "\u2066isolate\u2069",
    "rlm\u200f",
]


@pytest.mark.parametrize("job_id", ["two\nlines", "a\tb", "\x1b[31mred", "del\x7f", "c1\x85", *SPOOFING])
def test_control_add_refuses_an_id_with_a_control_character(job_id: str) -> None:
    with pytest.raises(validation.InputError, match=r"^job_id must not contain a control character") as error:
        control.add(job_id, "tests.support.jobs:succeed", schedule={"interval": {"minutes": 1}})

    assert (error.value.field, error.value.code) == ("job_id", "invalid_text")
    assert not DjangoJob.objects.exists()


@pytest.mark.parametrize("job_id", ["", "   "])
def test_control_add_refuses_an_empty_id(job_id: str) -> None:
    with pytest.raises(validation.InputError, match=r"^job_id must not be empty") as error:
        control.add(job_id, "tests.support.jobs:succeed", schedule={"interval": {"minutes": 1}})

    assert (error.value.field, error.value.code) == ("job_id", "invalid_text")
    assert not DjangoJob.objects.exists()


def test_an_id_may_hold_any_printable_text() -> None:
    assert validation.job_id("reports/weekly: Müller (ünïcode) ✓") == "reports/weekly: Müller (ünïcode) ✓"


def test_a_usual_duration_factor_too_large_for_a_float_is_refused_not_an_overflow() -> None:
    with pytest.raises(validation.InputError, match=r"^alert\.longer_than_usual must be a number from 1\.5"):
        validation.options({"alert": {"to": ["log"], "longer_than_usual": 10**400}})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["show", "steady", "--runs", "²"], "--runs must be a whole number from 1 to 100, not '²'"),
        (["show", "steady", "--runs", "9" * 5000], "--runs must be a whole number from 1 to 100, not '99999"),
        (["show", "steady", "--runs", "0"], "--runs must be a whole number from 1 to 100, not 0"),
        (
            ["prune", "--older-than-days", "10" * 10],
            "--older-than-days must be a whole number from 1 to 36500",
        ),
    ],
)
def test_the_cli_refuses_numbers_outside_the_limits(
    registry: dict, arguments: list[str], message: str
) -> None:
    job(interval=300, id="steady")(jobs.succeed)
    sync(JobStore(), registry.values())
    Execution.objects.create(
        job_id="steady", status="succeeded", scheduled_at=timezone.now() - timedelta(days=9)
    )

    with pytest.raises(CommandError, match="argument") as error:
        call_command("scheduling", *arguments, stdout=io.StringIO(), stderr=io.StringIO())

    assert message in str(error.value)

    assert Execution.objects.count() == 1


@pytest.mark.parametrize("name", ["a\nb", "tab\tbed", "\x1b[2Jx", *SPOOFING])
def test_a_calendar_name_refuses_what_a_job_id_refuses_naming_the_character(name: str) -> None:
    found = next(character for character in name if not character.isprintable())
    with pytest.raises(
        validation.InputError,
        match=rf"^name must not contain a control character \(it has {re.escape(ascii(found))}\)",
    ) as error:
        control.save_calendar(name)

    assert (error.value.field, error.value.code) == ("name", "invalid_text")
    assert not Calendar.objects.exists()
    with pytest.raises(validation.InputError, match=r"^calendars must not contain a control character"):
        validation.options({"calendars": [name]})


def test_a_calendar_name_may_hold_any_printable_text() -> None:
    assert validation.calendar_name("name", " Feiertage: Müller ✓ ") == "Feiertage: Müller ✓"


@pytest.mark.parametrize("day", [date(1, 1, 1), date(1969, 12, 31), date(9999, 12, 31)])
def test_an_excluded_day_is_held_to_the_dates_a_range_is(day: date) -> None:
    with pytest.raises(validation.InputError, match=r"^day must be a date from 1970 to 9999, not '"):
        validation.calendar_period(day, None, None, UTC)


def test_the_first_and_last_days_a_job_can_run_may_be_excluded() -> None:
    for day in (validation.FIRST_DATE.date(), validation.LAST_DATE.date()):
        assert validation.calendar_period(day, None, None, UTC) == (day, None, None)


def test_a_schedule_checked_again_comes_from_the_cache_as_a_copy_of_its_own() -> None:
    first = validation.schedule(cron={"minute": "*/5"})
    first["cron"]["minute"] = "changed by its caller"

    assert validation.schedule(cron={"minute": "*/5"}) == {"cron": {"minute": "*/5"}}


def test_schedules_that_compare_equal_but_read_differently_are_kept_apart() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    instant = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)

    assert validation.schedule(date=instant)["date"] == "2027-01-01T12:00:00+00:00"
    assert validation.schedule(date=instant.astimezone(berlin))["date"] == "2027-01-01T13:00:00+01:00"
    for _ in range(2):  # a refusal is never cached as an answer
        with pytest.raises(validation.InputError):
            validation.schedule(interval=True)
