"""The core's guarantees at the edges: fenced writes, compare-and-set, one job's failure its own.

Each test is one scenario of the review that broke the promises (a frozen leader, an operator
writing during a pass, a lost reply, a trigger that raises); each fails without the mechanism it
names.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.db import OperationalError, connection
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, identity, sql
from scheduling.fencing import FenceLost
from scheduling.history import recorder as recorder_module
from scheduling.history import retry
from scheduling.history.housekeeping import recover_interrupted, running_elsewhere
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Outcome
from scheduling.history.writer import OutcomeWriter
from scheduling.models import Execution, Lease, ScheduledJob, SchedulerInstance, SchedulerInstanceQuerySet
from scheduling.placement import Placement
from scheduling.queries import job_summaries
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import MAX_FIRE_TIMES, MAX_ROWS_PER_JOB, Dispatcher
from scheduling.runtime.leadership import Leadership
from scheduling.store import JobStore
from tests.conftest import wait_for
from tests.support import triggers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def store() -> JobStore:
    job_store = JobStore()
    job_store.start(BackgroundScheduler(timezone=UTC), "default")
    return job_store


def stored(
    store: JobStore,
    job_id: str,
    trigger: BaseTrigger,
    due: datetime,
    func: str = "tests.support.jobs:succeed",
    **options: Any,
) -> Job:
    job = Job(
        None,
        id=job_id,
        func=func,
        trigger=trigger,
        executor=options.pop("executor", "default"),
        max_instances=options.pop("max_instances", 1),
        coalesce=options.pop("coalesce", True),
        misfire_grace_time=options.pop("misfire_grace_time", 60),
        name=job_id,
        args=(),
        kwargs={},
    )
    job.next_run_time = due
    store.add_job(job)
    return job


def due_now(store: JobStore) -> tuple[list[Job], datetime]:
    now = datetime.now(UTC)
    jobs, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
    return jobs, now


def leading(recorder: Recorder) -> Leadership:
    leadership = Leadership(uuid.uuid4())
    assert leadership.claim()
    recorder.fence = leadership.fence
    return leadership


def expire_lease() -> None:
    """What the database sees once a frozen holder's lease has run out."""
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))


# 1. One bad job stops everything.


@pytest.mark.parametrize(
    ("trigger", "error"),
    [(triggers.Exploding(), "this trigger fails on purpose"), (triggers.Backwards(), "went backwards")],
    ids=["raises", "goes-backwards"],
)
def test_a_job_whose_fires_cannot_be_computed_is_flagged_broken_and_the_others_run(
    store: JobStore, executor: ThreadTarget, trigger: BaseTrigger, error: str
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "bad", trigger, past)
    stored(store, "good", IntervalTrigger(seconds=30, start_date=past - timedelta(seconds=60)), past)
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))

    dispatcher.dispatch(*due_now(store))

    assert executor.wait(10)
    assert Execution.objects.get(job_id="good").status == "succeeded"
    flagged = ScheduledJob.objects.get(id="bad")
    assert flagged.import_error.startswith("The schedule could not be computed:")
    assert error in flagged.import_error
    failure = Execution.objects.get(job_id="bad")
    assert (failure.status, failure.scheduled_at) == ("failed", past)
    assert error in failure.exception
    # Recorded once: the next passes leave it out, and the admin, CLI and API say why.
    jobs, _ = due_now(store)
    assert "bad" not in [job.id for job in jobs]
    assert Execution.objects.filter(job_id="bad").count() == 1
    (summary,) = job_summaries(["bad"])
    assert summary.state.startswith("broken: The schedule could not be computed")


def test_a_broken_job_is_given_another_chance_when_an_operator_resumes_it(
    store: JobStore, executor: ThreadTarget
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "bad", triggers.Exploding(), past)
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))
    assert ScheduledJob.objects.get(id="bad").import_error

    control.reschedule("bad", interval={"seconds": 30})

    assert ScheduledJob.objects.get(id="bad").import_error == ""
    assert [job.id for job in store.get_all_jobs()] == ["bad"]


def test_a_huge_misfire_grace_time_does_not_overflow(store: JobStore, executor: ThreadTarget) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "patient", IntervalTrigger(seconds=30, start_date=past), past, misfire_grace_time=10**14)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert executor.wait(10)
    assert Execution.objects.get(job_id="patient").status == "succeeded"


def test_a_trigger_with_billions_of_fires_to_catch_up_skips_ahead_in_bounded_time(
    store: JobStore, executor: ThreadTarget
) -> None:
    stored(store, "dense", triggers.Dense(), datetime.now(UTC) - timedelta(hours=1))

    _, now = due_now(store)
    next_run_time = Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    (row,) = Execution.objects.filter(job_id="dense")
    assert row.status == "missed"
    assert f"more than {MAX_FIRE_TIMES} fires were due" in row.exception
    assert next_run_time is not None
    assert next_run_time > now


def test_catching_up_without_coalescing_writes_a_bounded_number_of_rows(
    store: JobStore, executor: ThreadTarget
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5000)
    stored(store, "behind", IntervalTrigger(seconds=1, start_date=start), start, coalesce=False)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert executor.wait(10)
    rows = Execution.objects.filter(job_id="behind")
    assert rows.count() == MAX_ROWS_PER_JOB
    summary = rows.get(scheduled_at=start)
    assert summary.status == "missed"
    assert "recorded as this one row" in summary.exception


# 2. Dispatch undoes other writers.


@pytest.mark.parametrize("change", ["pause", "reschedule"])
def test_an_operator_change_made_during_a_pass_stands(
    store: JobStore, executor: ThreadTarget, change: str
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "job", IntervalTrigger(seconds=30, start_date=past), past)
    jobs, now = due_now(store)

    if change == "pause":  # between the pass's SELECT and its UPDATE, from another process
        control.pause("job")
    else:
        control.reschedule("job", interval={"hours": 6})
    written = DjangoJob.objects.get(id="job")
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(jobs, now)

    assert executor.wait(10)
    after = DjangoJob.objects.get(id="job")
    assert (after.next_run_time, bytes(after.job_state)) == (written.next_run_time, bytes(written.job_state))
    if change == "reschedule":
        assert after.next_run_time > now + timedelta(hours=5)


def test_a_one_off_job_rescheduled_during_its_pass_is_kept(store: JobStore, executor: ThreadTarget) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "once", DateTrigger(past), past)
    jobs, now = due_now(store)

    later = now + timedelta(days=1)
    control.reschedule("once", date=later.isoformat())
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(jobs, now)

    assert executor.wait(10)
    assert DjangoJob.objects.get(id="once").next_run_time == later


def test_a_one_off_job_left_alone_is_removed_after_its_fire(store: JobStore, executor: ThreadTarget) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "once", DateTrigger(past), past)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert executor.wait(10)
    assert not DjangoJob.objects.filter(id="once").exists()
    assert Execution.objects.get(job_id="once").status == "succeeded"


# 3. A stale leader still writes; 7. leaked reservations.


@pytest.mark.parametrize("taken", [True, False], ids=["taken-over", "expired"])
def test_a_leader_whose_lease_lapsed_writes_nothing_and_keeps_no_slot(
    store: JobStore, executor: ThreadTarget, taken: bool
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "job", IntervalTrigger(seconds=30, start_date=past), past)
    stale = leading(executor.recorder)
    jobs, now = due_now(store)  # ... and then it froze

    expire_lease()
    if taken:
        assert Leadership(uuid.uuid4()).claim()
    assert stale.held, "by its own clock it still leads: only the database can tell"
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    with pytest.raises(FenceLost):
        dispatcher.dispatch(jobs, now)

    assert not Execution.objects.exists()
    assert DjangoJob.objects.get(id="job").next_run_time == past
    assert executor.reserve(jobs[0]), "the pass's slot was given back"
    executor.release(jobs[0])


def test_a_take_over_moves_the_epoch_on() -> None:
    first, second = Leadership(uuid.uuid4()), Leadership(uuid.uuid4())
    assert first.claim()
    assert first.fence is not None
    epoch = first.fence.epoch
    expire_lease()

    assert second.claim()
    assert second.fence is not None
    assert second.fence.epoch == epoch + 1
    assert not first.claim(), "the renewal of a lapsed epoch fails"
    assert not first.held


def test_a_pass_that_fails_to_record_gives_its_slots_back(
    store: JobStore, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "WRITE_RETRY_FOR", 0.5)  # SQLite's "no such table" is retried
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "job", IntervalTrigger(seconds=30, start_date=past), past)
    jobs, now = due_now(store)
    table = connection.ops.quote_name(Execution._meta.db_table)
    with connection.cursor() as cursor:  # the history cannot be written: the INSERT fails
        cursor.execute(f"ALTER TABLE {table} RENAME TO scheduling_execution_away")
    try:
        with pytest.raises(Exception, match="scheduling_execution"):
            Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(jobs, now)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE scheduling_execution_away RENAME TO {table}")

    jobs, now = due_now(store)
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(jobs, now)

    assert executor.wait(10)
    assert Execution.objects.get(job_id="job").status == "succeeded", "not 'skipped: still running'"


# 8. A lost reply to a committed INSERT; 10. databases without RETURNING.


def test_rows_committed_before_a_lost_reply_are_recognised_and_run(
    store: JobStore, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "job", IntervalTrigger(seconds=30, start_date=past), past)
    leading(executor.recorder)
    insert_rows = sql.insert_rows
    lost: list[bool] = []

    def reply_lost_once(*args: Any, **kwargs: Any) -> Any:
        result = insert_rows(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(recorder_module, "insert_rows", reply_lost_once)
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert lost
    assert executor.wait(10)
    assert Execution.objects.get(job_id="job").status == "succeeded"


def test_a_database_that_cannot_return_inserted_rows_still_runs_and_records(
    store: JobStore, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    past = datetime.now(UTC) - timedelta(seconds=2)
    for number in range(3):
        stored(store, f"job-{number}", IntervalTrigger(seconds=30, start_date=past), past)
    leading(executor.recorder)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert executor.wait(10)
    assert sorted(Execution.objects.values_list("status", flat=True)) == ["succeeded"] * 3


# 9 is in test_dispatch (an outcome after "interrupted"); 11: outcomes the database refused.


def test_outcomes_the_database_refused_are_written_once_it_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retry, "WRITE_RETRY_FOR", 0.5)
    recorder = Recorder()
    (row,) = recorder.insert([recorder.running_row("job", timezone.now())])
    outcomes = OutcomeWriter()
    table = connection.ops.quote_name(Execution._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO scheduling_execution_away")
    try:
        outcomes.finish(row, Outcome("succeeded", timezone.now(), timezone.now(), 0.5), wait=True)
        assert outcomes.pending == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE scheduling_execution_away RENAME TO {table}")
    wait_for(lambda: Execution.objects.get(pk=row.pk).status == "succeeded", timeout=15)
    outcomes.stop()
    assert outcomes.pending == 0


def test_task_jobs_without_coalescing_enqueue_no_more_fires_than_max_instances(
    store: JobStore, executor: ThreadTarget
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=3.5)
    placement = Placement.build("tasks")
    stored(
        store,
        "queued",
        IntervalTrigger(seconds=1, start_date=start),
        start,
        coalesce=False,
        executor=placement.alias,
    )

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    statuses = sorted(Execution.objects.filter(job_id="queued").values_list("status", flat=True))
    assert statuses == ["enqueued", "skipped", "skipped", "skipped"]


# A take-over: runs still going elsewhere count, and a frozen process's runs are not interrupted.


def test_a_frozen_scheduler_of_this_host_keeps_its_runs() -> None:
    frozen = SchedulerInstance.objects.create(
        hostname="here", pid=os.getpid(), last_beat=timezone.now() - timedelta(hours=1), **identity.fields()
    )
    gone = SchedulerInstance.objects.create(
        hostname="elsewhere", pid=1, last_beat=timezone.now() - timedelta(hours=1)
    )
    for instance in (frozen, gone):
        Execution.objects.create(
            job_id=f"job-{instance.hostname}",
            status="running",
            scheduled_at=timezone.now(),
            instance=instance,
        )

    assert recover_interrupted() == 1

    assert Execution.objects.get(instance=frozen).status == "running", (
        "its process exists: it is frozen, not dead"
    )
    assert Execution.objects.get(instance=gone).status == "interrupted"


def test_a_frozen_scheduler_that_beats_again_while_its_runs_are_looked_at_keeps_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Woken from a SIGSTOP, a scheduler beat between the two looks of a standby's housekeeping:
    # stale at the first (schedulers beating), fresh at the second (this host's, not beating),
    # it was in neither, and its runs, just ended, were recorded interrupted (chaos, MariaDB).
    woken = SchedulerInstance.objects.create(
        hostname="here", pid=os.getpid(), last_beat=timezone.now() - timedelta(hours=1), **identity.fields()
    )
    Execution.objects.create(job_id="slow", status="running", scheduled_at=timezone.now(), instance=woken)
    beating = SchedulerInstanceQuerySet.alive

    def beats_right_after(queryset: SchedulerInstanceQuerySet) -> SchedulerInstanceQuerySet:
        found = list(beating(queryset))  # the first look, as the beat is being written
        SchedulerInstance.objects.filter(pk=woken.pk).update(last_beat=timezone.now())
        return queryset.filter(pk__in=[instance.pk for instance in found])

    monkeypatch.setattr(SchedulerInstanceQuerySet, "alive", beats_right_after)

    assert recover_interrupted() == 0
    assert Execution.objects.get(instance=woken).status == "running"


def test_runs_still_going_in_another_scheduler_count_against_max_instances(
    store: JobStore, executor: ThreadTarget
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=2)
    stored(store, "single", IntervalTrigger(seconds=30, start_date=past), past)
    other = SchedulerInstance.objects.create(hostname="other", pid=1)
    Execution.objects.create(
        job_id="single", status="running", scheduled_at=past - timedelta(seconds=30), instance=other
    )
    executor.elsewhere = running_elsewhere(None)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(*due_now(store))

    assert executor.wait(10)
    assert Execution.objects.get(job_id="single", scheduled_at=past).status == "skipped"
