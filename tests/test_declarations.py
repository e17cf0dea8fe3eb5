from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.test import override_settings

from scheduling import declarations, job, validation
from scheduling.declarations import JobDeclarationError
from scheduling.placement import Placement, RunsIn
from tests.support import jobs


def test_declaring_registers_a_job_with_an_id_from_its_dotted_path(registry: dict) -> None:
    decorated = job(interval={"minutes": 5})(jobs.succeed)

    assert decorated is jobs.succeed
    declaration = registry["tests.support.jobs.succeed"]
    assert declaration.func_ref == "tests.support.jobs:succeed"
    assert declaration.schedule == {"interval": {"minutes": 5}}
    assert (declaration.max_instances, declaration.coalesce, declaration.misfire_grace_time) == (1, True, 60)


def test_all_options_are_kept(registry: dict) -> None:
    job(
        cron="0 3 * * *",
        id="nightly",
        name="Nightly",
        args=[1, "two"],
        kwargs={"three": 3.0},
        max_instances=2,
        coalesce=False,
        misfire_grace_time=None,
        jitter=30,
        timezone="Europe/Berlin",
    )(jobs.sleep)

    declaration = registry["nightly"]
    assert declaration.name == "Nightly"
    assert declaration.args == (1, "two")
    assert declaration.kwargs == {"three": 3.0}
    assert declaration.schedule == {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "jitter": 30}
    assert (declaration.max_instances, declaration.coalesce, declaration.misfire_grace_time) == (
        2,
        False,
        None,
    )


def test_async_functions_can_be_jobs(registry: dict) -> None:
    job(interval=10)(jobs.async_job)
    assert registry["tests.support.jobs.async_job"].func_ref == "tests.support.jobs:async_job"


def test_declaring_the_same_job_twice_identically_is_harmless(registry: dict) -> None:
    job(interval=10)(jobs.succeed)
    job(interval=10)(jobs.succeed)
    assert list(registry) == ["tests.support.jobs.succeed"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"cron": "61 * * * *"},
            r"Job 'tests.support.jobs.succeed': invalid cron expression '61 \* \* \* \*'",
        ),
        ({"interval": 5, "minutes": 5}, r"Job 'tests.support.jobs.succeed': unknown option 'minutes'"),
        # Stored with no next run, the job would look paused though nobody paused it.
        ({"cron": "0 0 30 2 *"}, r"Job 'tests.support.jobs.succeed': this cron schedule never fires"),
        ({"cron": {"year": "2020", "hour": "3"}}, r"this cron schedule never fires: no time from now on"),
        (
            {"interval": 5, "args": [dt.datetime.now()]},
            r"Job 'tests.support.jobs.succeed': args cannot be stored",
        ),
        (
            {"interval": 5, "kwargs": {"x": object()}},
            r"Job 'tests.support.jobs.succeed': kwargs cannot be stored",
        ),
        (
            {"interval": 5, "args": ["a\x00b"]},
            r"Job 'tests.support.jobs.succeed': args must not contain a NUL character",
        ),
        (
            {"interval": 5, "kwargs": {"path": "\udcff"}},
            r"Job 'tests.support.jobs.succeed': kwargs must be Unicode text \(it has a lone surrogate\)",
        ),
        ({"interval": 5, "max_instances": 0}, r"max_instances must be a whole number from 1 to 1000, not 0"),
        ({"interval": 5, "misfire_grace_time": 0}, r"misfire_grace_time must be"),
        ({"interval": 5, "jitter": -1}, r"jitter must be"),
        ({"interval": 5, "id": "x" * 256}, r"id is 256 characters long"),
    ],
)
def test_bad_declarations_fail_where_declared_and_name_the_job(
    registry: dict, options: dict, message: str
) -> None:
    with pytest.raises(JobDeclarationError, match=message):
        job(**options)(jobs.succeed)
    assert registry == {}


def test_two_functions_cannot_share_an_id(registry: dict) -> None:
    job(interval=5, id="report")(jobs.succeed)
    with pytest.raises(
        JobDeclarationError,
        match=r"'report' is declared twice: by tests.support.jobs:succeed and by tests.support.jobs:fail",
    ):
        job(interval=5, id="report")(jobs.fail)


def test_functions_that_cannot_be_imported_by_name_are_refused(registry: dict) -> None:
    def nested() -> None:
        pass

    with pytest.raises(JobDeclarationError, match="nested function"):
        job(interval=5)(nested)
    with pytest.raises(JobDeclarationError, match="lambda"):
        job(interval=5, id="anonymous")(lambda: None)


def test_jobs_modules_of_installed_apps_are_discovered_at_start_up() -> None:
    from scheduling.declarations import registry

    assert registry["scheduling.prune_history"].func_ref == "scheduling.jobs:prune_history"


@pytest.mark.parametrize("runs_in", ["threads", "processes", "tasks"])
def test_where_a_job_runs_is_kept_as_a_plain_executor_alias(registry: dict, runs_in: str) -> None:
    # Job rows pickle the alias: a RunsIn member there would tie every row to scheduling.placement.
    job(interval=30, id="placed", runs_in=runs_in)(jobs.succeed)

    executor = registry["placed"].executor
    assert type(executor) is str
    assert Placement.of(executor).runs_in == runs_in
    assert type(Placement.of(executor).runs_in) is RunsIn


def test_jobs_declared_with_the_same_options_have_them_checked_once(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100,000 generated declarations took 8 s, most of it checking the same options again.
    checked: list[dict] = []
    check = validation.options

    def counted(values: dict) -> dict:
        checked.append(values)
        return check(values)

    monkeypatch.setattr(validation, "options", counted)
    declarations._checked_cached.cache_clear()

    for number in range(50):
        job(id=f"report-{number}", args=[number], interval={"hours": 1}, retries=2)(jobs.write_arguments)
    job(id="other", interval={"hours": 1}, retries=3)(jobs.succeed)

    assert len(checked) == 2
    assert [registry[f"report-{n}"].args for n in (0, 49)] == [(0,), (49,)]
    assert registry["report-7"].policy == {"retries": 2}
    assert registry["other"].policy == {"retries": 3}


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ({"interval": 60, "max_instances": 1}, {"interval": 60, "max_instances": True}),  # 1 == True
        ({"interval": 1}, {"interval": True}),
        ({"interval": {"minutes": 1}}, {"interval": {"minutes": True}}),
        ({"interval": 60, "retries": 1}, {"interval": 60, "retries": True}),
    ],
)
def test_a_declaration_equal_to_a_checked_one_only_in_value_is_checked_afresh(
    registry: dict, first: dict, then: dict
) -> None:
    job(id="first", **first)(jobs.succeed)
    with pytest.raises(JobDeclarationError, match="Job 'then'"):
        job(id="then", **then)(jobs.succeed)


def test_each_declaration_holds_its_own_schedule_and_policy(registry: dict) -> None:
    for job_id in ("a", "b"):
        job(id=job_id, cron={"second": "*/5"}, calendars=["holidays"])(jobs.succeed)
    registry["a"].schedule["cron"]["second"] = "1"
    registry["a"].policy["calendars"].append("strike")

    assert registry["b"].schedule["cron"]["second"] == "*/5"
    assert registry["b"].policy["calendars"] == ["holidays"]
    job(id="c", cron={"second": "*/5"}, calendars=["holidays"])(jobs.succeed)
    assert registry["c"].policy["calendars"] == ["holidays"]


def test_changed_job_defaults_apply_to_declarations_made_after_the_change(registry: dict) -> None:
    job(id="before", interval=60)(jobs.succeed)
    with override_settings(SCHEDULING_JOB_DEFAULTS={"misfire_grace_time": 5}):
        job(id="during", interval=60)(jobs.succeed)
    job(id="after", interval=60)(jobs.succeed)

    assert [registry[name].misfire_grace_time for name in ("before", "during", "after")] == [60, 5, 60]


def test_a_declarations_fingerprint_keeps_its_format(registry: dict) -> None:
    # Changed, it would make every stored job "changed in code" at the next start, and the code
    # wins there: operators' overrides would be dropped. The value is pinned from the format's
    # first definition: sha256 of json.dumps(as_dict(), sort_keys=True, default=str).
    job(
        id="pinned",
        cron={"minute": "*/5", "hour": "3"},
        args=["a", 1],
        kwargs={"z": {"b": 2, "a": [1, None]}, "y": True},
        retries=2,
        runs_in="processes",
    )(jobs.write_arguments)
    declaration = registry["pinned"]
    payload = json.dumps(declaration.as_dict(), sort_keys=True, default=str)

    assert declaration.fingerprint == hashlib.sha256(payload.encode()).hexdigest()
    assert declaration.fingerprint == "081e384dde20f425883d2aeb4055cfd81586408844a1acde8045901e8254f63a"
