from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job
from scheduling import store as store_module
from scheduling.declarations import Declaration
from scheduling.models import Execution, ScheduledJob
from scheduling.store import JobStore, state_digest
from scheduling.sync import (
    SYNCED_STATE,
    SyncReport,
    _note_digests,
    _sync_declared,
    build_job,
    stored_rows,
    sync,
)
from tests.support import jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def store() -> JobStore:
    return JobStore()


def declare(registry: dict, **options: Any) -> Declaration:
    options.setdefault("interval", {"minutes": 5})
    func = options.pop("func", jobs.succeed)
    job(id="report", **options)(func)
    return registry.pop("report")


def next_run(job_id: str = "report") -> datetime | None:
    return DjangoJob.objects.get(id=job_id).next_run_time


def test_declared_jobs_are_written_to_the_django_apscheduler_store(registry: dict, store: JobStore) -> None:
    declaration = declare(registry)
    before = timezone.now()

    report = sync(store, [declaration])

    assert report.added == ["report"]
    assert report.summary() == "1 added"
    stored = store.lookup_job("report")
    assert stored.func is jobs.succeed
    assert stored.trigger.interval == timedelta(minutes=5)
    assert before + timedelta(minutes=5) <= stored.next_run_time <= timezone.now() + timedelta(minutes=5)
    scheduled_job = ScheduledJob.objects.get(id="report")
    assert scheduled_job.source == ScheduledJob.Source.CODE
    assert scheduled_job.declaration is not None
    assert scheduled_job.declaration["schedule"] == {"interval": {"minutes": 5}}


def test_a_restart_with_unchanged_code_changes_nothing(registry: dict, store: JobStore) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    state_before = bytes(DjangoJob.objects.get(id="report").job_state)

    report = sync(store, [declaration])

    assert (report.added, report.updated, report.overridden) == ([], [], [])
    assert bytes(DjangoJob.objects.get(id="report").job_state) == state_before
    assert ScheduledJob.objects.get(id="report").overridden_at is None


def test_a_schedule_changed_outside_the_code_survives_restarts_and_is_flagged(
    registry: dict, store: JobStore
) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    _reschedule(store)

    first = sync(store, [declaration])
    second = sync(store, [declaration])

    assert first.overridden == ["report"]
    assert second.overridden == []
    assert store.lookup_job("report").trigger.interval == timedelta(seconds=7)
    assert ScheduledJob.objects.get(id="report").overridden_at is not None


def _reschedule(store: JobStore) -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    store.modify_job(store.lookup_job("report"), trigger=IntervalTrigger(seconds=7))


def test_control_reschedule_flags_the_override_and_reset_restores_the_code(
    registry: dict, store: JobStore
) -> None:
    declaration = declare(registry)
    registry["report"] = declaration
    sync(store, [declaration])

    control.reschedule("report", cron="0 4 * * *")
    sync(store, [declaration])
    assert (
        str(store.lookup_job("report").trigger)
        == "cron[month='*', day='*', day_of_week='*', hour='4', minute='0']"
    )
    assert ScheduledJob.objects.get(id="report").overridden_at is not None

    control.reset("report")
    assert store.lookup_job("report").trigger.interval == timedelta(minutes=5)
    assert ScheduledJob.objects.get(id="report").overridden_at is None


def test_a_changed_declaration_wins_over_an_override(registry: dict, store: JobStore) -> None:
    sync(store, [declare(registry)])
    control.reschedule("report", interval={"seconds": 7})

    report = sync(store, [declare(registry, interval={"hours": 2})])

    assert report.updated == ["report"]
    assert store.lookup_job("report").trigger.interval == timedelta(hours=2)
    assert ScheduledJob.objects.get(id="report").overridden_at is None


def test_a_paused_job_stays_paused_across_restarts_and_code_changes(registry: dict, store: JobStore) -> None:
    sync(store, [declare(registry)])
    control.pause("report")

    sync(store, [declare(registry)])
    assert next_run() is None
    sync(store, [declare(registry, interval={"hours": 2})])
    assert next_run() is None


def test_a_job_removed_from_the_code_is_paused_and_kept_then_resumes_when_it_returns(
    registry: dict, store: JobStore
) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    Execution.objects.create(job_id="report", status="succeeded", scheduled_at=timezone.now())

    report = sync(store, [])

    assert report.undeclared == ["report"]
    assert report.summary() == "1 no longer declared (paused)"
    assert next_run() is None
    assert ScheduledJob.objects.get(id="report").undeclared_at is not None
    assert Execution.objects.filter(job_id="report").count() == 1

    sync(store, [declaration])
    assert next_run() is not None
    scheduled_job = ScheduledJob.objects.get(id="report")
    assert (scheduled_job.undeclared_at, scheduled_job.paused_by_sync) == (None, False)


def test_a_job_whose_function_vanished_is_kept_flagged_and_resumes_when_the_code_returns(
    registry: dict, store: JobStore
) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    Execution.objects.create(job_id="report", status="succeeded", scheduled_at=timezone.now())
    row = DjangoJob.objects.get(id="report")
    good_state = bytes(row.job_state)
    state = pickle.loads(good_state)  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="report").update(job_state=pickle.dumps(state))

    report = sync(store, [])
    assert store.get_due_jobs(timezone.now() + timedelta(days=1)) == []

    assert report.broken == ["report"]
    assert DjangoJob.objects.filter(id="report").exists()
    assert Execution.objects.filter(job_id="report").count() == 1
    scheduled_job = ScheduledJob.objects.get(id="report")
    assert "renamed_away" in scheduled_job.import_error
    assert store.get_next_run_time() is None

    DjangoJob.objects.filter(id="report").update(job_state=good_state)
    report = sync(store, [declaration])
    assert report.repaired == ["report"]
    assert ScheduledJob.objects.get(id="report").import_error == ""
    assert store.get_next_run_time() is not None


def test_a_deleted_declared_job_is_not_brought_back_by_a_restart(registry: dict, store: JobStore) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    control.delete("report")

    sync(store, [declaration])

    assert not DjangoJob.objects.filter(id="report").exists()


def test_jobs_added_outside_the_code_keep_running_and_are_recorded(registry: dict, store: JobStore) -> None:
    sync(store, [declare(registry)])
    store.add_job(_rescheduled_copy(store, "legacy"))

    sync(store, [])

    scheduled_job = ScheduledJob.objects.get(id="legacy")
    assert scheduled_job.source == ScheduledJob.Source.EXTERNAL
    assert scheduled_job.func_ref == "tests.support.jobs:succeed"
    assert next_run("legacy") is not None


def _rescheduled_copy(store: JobStore, job_id: str) -> object:
    from apscheduler.triggers.interval import IntervalTrigger

    trigger = IntervalTrigger(minutes=1)
    return store.new_job(
        id=job_id,
        func=jobs.succeed,
        trigger=trigger,
        executor="default",
        args=(),
        kwargs={},
        name=job_id,
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
        next_run_time=trigger.get_next_fire_time(None, timezone.now()),
    )


def _loads_counted(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []
    load_row = store.load_row

    def counted(job_state: bytes | memoryview) -> Any:
        job = load_row(job_state)
        loaded.append(job.id)
        return job

    monkeypatch.setattr(store, "load_row", counted)
    return loaded


def test_a_restart_loads_only_the_jobs_whose_stored_state_changed_beyond_their_next_run(
    registry: dict, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unpickling and fingerprinting every stored job made most of a restart with 100,000 of them.
    for job_id in ("ran", "paused", "edited", "still"):
        job(id=job_id, interval={"minutes": 5})(jobs.succeed)
    declarations = [registry.pop(job_id) for job_id in ("ran", "paused", "edited", "still")]
    sync(store, declarations)
    ran = store.lookup_job("ran")
    ran.next_run_time += timedelta(minutes=5)
    store.update_job(ran)
    control.pause("paused")
    store.modify_job(store.lookup_job("edited"), name="changed in the shell")
    loaded = _loads_counted(store, monkeypatch)

    report = sync(store, declarations)

    assert loaded == ["edited"]
    assert report.overridden == ["edited"]
    assert next_run("paused") is None
    loaded.clear()
    assert sync(store, declarations).overridden == []
    assert loaded == ["edited"]  # an override is looked at again at each restart, as before


def test_the_first_restart_after_the_upgrade_loads_every_job_once_and_notes_its_digest(
    registry: dict, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    digest = ScheduledJob.objects.get(id="report").state_digest
    assert digest == state_digest(DjangoJob.objects.get(id="report").job_state)
    ScheduledJob.objects.update(state_digest="")  # as the migration leaves synced jobs
    loaded = _loads_counted(store, monkeypatch)

    sync(store, [declaration])
    assert loaded == ["report"]
    assert ScheduledJob.objects.get(id="report").state_digest == digest
    sync(store, [declaration])
    assert loaded == ["report"]


def test_a_digest_is_not_noted_over_a_reset_written_since_the_job_was_checked(
    registry: dict, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    declaration = declare(registry)
    sync(store, [declaration])
    ScheduledJob.objects.update(state_digest="")
    stale = ScheduledJob.objects.values_list(*SYNCED_STATE, named=True).get(id="report")
    ScheduledJob.objects.update(stored_fingerprint="f" * 64, state_digest="written by the reset")
    checked: dict[str, tuple[str, str]] = {}
    [row] = stored_rows()

    _sync_declared(store, declaration, stale, row, timezone.now(), SyncReport(), checked)
    _note_digests(checked)

    assert list(checked) == ["report"]
    assert ScheduledJob.objects.get(id="report").state_digest == "written by the reset"


@pytest.mark.parametrize(
    "change",
    [
        {"args": ("other",)},
        {"kwargs": {"label": "other"}},
        {"name": "other"},
        {"misfire_grace_time": 61},
        {"coalesce": False},
        {"max_instances": 2},
        {"executor": "processes"},
        {"func": jobs.talk, "kwargs": {"count": 2}},
        {"interval": {"minutes": 6}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_state_digest_follows_everything_a_stored_job_holds_but_its_next_run_time(
    store: JobStore, change: dict[str, Any]
) -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    def stored(next_run_time: datetime | None = None, **changed: Any) -> bytes:
        options: dict[str, Any] = {
            "func": jobs.write_arguments,
            "args": ("report",),
            "kwargs": {"label": "ops"},
            "name": "report",
            "misfire_grace_time": 60,
            "coalesce": True,
            "max_instances": 1,
            "executor": "default",
            "interval": {"minutes": 5},
        } | changed
        trigger = IntervalTrigger(**options.pop("interval"), start_date=datetime(2026, 1, 1, tzinfo=UTC))
        new = store.new_job(id="report", trigger=trigger, next_run_time=next_run_time, **options)
        return bytes(store.row(new).job_state)

    moment = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    digest = state_digest(stored(moment))
    assert digest
    assert state_digest(stored(moment + timedelta(days=400))) == digest
    assert state_digest(stored(None)) == digest  # paused: a shorter pickle, so another frame length
    assert state_digest(stored(moment, **change)) != digest
    assert state_digest(pickle.dumps({"not": "a job"})) == ""


def test_a_declared_job_is_built_as_apscheduler_builds_it_with_its_arguments_checked_once_per_shape(
    registry: dict, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Job() inspected the function's signature for every job: a sixth of a first start.
    checks: list[tuple] = []
    check = store_module.check_callable_args

    def counted(*given: Any) -> None:
        checks.append(given)
        check(*given)

    monkeypatch.setattr(store_module, "check_callable_args", counted)
    store_module._check_arguments.cache_clear()
    for number in range(5):
        job(id=f"write-{number}", interval=60, args=[f"out-{number}"], kwargs={"count": 2})(
            jobs.write_arguments
        )
    now = timezone.now()

    built = [build_job(registry[f"write-{number}"], store, now) for number in range(5)]

    assert len(checks) == 1
    trigger = built[0].trigger
    expected = store.new_job(
        id="write-0",
        func="tests.support.jobs:write_arguments",
        trigger=trigger,
        executor="default",
        args=("out-0",),
        kwargs={"count": 2},
        name="write_arguments",
        misfire_grace_time=60,
        coalesce=True,
        max_instances=1,
        next_run_time=built[0].next_run_time,
    )
    assert built[0].__getstate__() == expected.__getstate__()
    assert built[0].func is jobs.write_arguments
    assert (built[0]._jobstore_alias, built[0]._scheduler) == (expected._jobstore_alias, expected._scheduler)


def test_a_declaration_whose_arguments_the_function_does_not_take_fails_the_sync_naming_them(
    registry: dict, store: JobStore
) -> None:
    job(id="bad", interval=60, args=[1, 2])(jobs.succeed)

    with pytest.raises(ValueError, match="positional arguments"):
        sync(store, [registry["bad"]])


@pytest.mark.parametrize(
    "values",
    [
        {"id": "next_run_time"},  # interned like the key: pickle refers to it, the key is not written
        {"kwargs": {"next_run_time": 1}},
        {"args": ("next_run_time",)},
        {"id": "the_next_run_time_report"},
    ],
    ids=["id", "kwargs key", "argument", "id containing it"],
)
def test_a_state_whose_values_hold_the_next_run_time_key_gets_no_digest(
    store: JobStore, values: dict[str, Any]
) -> None:
    # Found in a value instead of as the last key, the digest would leave out the fields after it
    # (a change of max_instances made outside the code would go unnoticed). Such a job is loaded.
    from apscheduler.triggers.interval import IntervalTrigger

    def stored(holding: dict[str, Any], **changes: Any) -> bytes:
        state = (
            {
                "version": 1,
                "id": "report",
                "func": "tests.support.jobs:succeed",
                "trigger": IntervalTrigger(minutes=5, start_date=datetime(2026, 1, 1, tzinfo=UTC)),
                "executor": "default",
                "args": (),
                "kwargs": {},
                "name": "report",
                "misfire_grace_time": 60,
                "coalesce": True,
                "max_instances": 1,
                "next_run_time": datetime(2026, 12, 7, tzinfo=UTC),
            }
            | holding
            | changes
        )
        return pickle.dumps(state, store.pickle_protocol)  # as the store writes it

    assert state_digest(stored({}))
    assert state_digest(stored(values)) == ""
    assert state_digest(stored(values, max_instances=2)) == ""
