from __future__ import annotations

import importlib
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.job import Job
from apscheduler.triggers.interval import IntervalTrigger
from django.apps import apps
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_apscheduler.models import DjangoJob, DjangoJobExecution
from pytest_django import DjangoAssertNumQueries

from scheduling import control, current_run, identity, job
from scheduling.history.housekeeping import EVERYTHING, Pending, pending_work, prune, recover_interrupted
from scheduling.history.recorder import Recorder
from scheduling.models import Alert, AlertDelivery, Execution, SchedulerInstance
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget, run_job
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def make_job(func: object, *args: object, grace: int | None = 60) -> Job:
    job = Job(
        None,
        id="job",
        func=func,
        trigger=IntervalTrigger(minutes=1),
        executor="default",
        args=args,
        kwargs={},
        name="job",
        misfire_grace_time=grace,
        coalesce=True,
        max_instances=1,
    )
    job.next_run_time = None
    return job


def test_a_successful_run_records_start_finish_duration_and_where_it_ran() -> None:
    scheduled = datetime.now(UTC) - timedelta(seconds=2)

    run_job(make_job(jobs.sleep, 0.2), [scheduled], Recorder())

    execution = Execution.objects.get()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.scheduled_at == scheduled
    assert execution.started_at
    assert execution.finished_at
    assert execution.duration is not None
    assert execution.started_at >= scheduled + timedelta(seconds=2)
    assert 0.2 <= execution.duration < 1.5, "duration of the run itself, not since the scheduled time"
    assert execution.finished_at >= execution.started_at + timedelta(seconds=0.2)
    assert (execution.hostname, execution.pid) == (socket.gethostname(), os.getpid())
    assert execution.origin == Execution.Origin.SCHEDULE


def test_a_failed_run_records_the_exception_and_the_full_traceback() -> None:
    run_job(make_job(jobs.fail), [datetime.now(UTC)], Recorder())

    execution = Execution.objects.get()
    assert execution.status == Execution.Status.FAILED
    assert execution.exception == "ValueError: this job fails on purpose"
    assert 'in fail\n    raise ValueError("this job fails on purpose")' in execution.traceback
    assert execution.traceback.rstrip().endswith("ValueError: this job fails on purpose")


def test_async_jobs_are_awaited_to_completion() -> None:
    jobs.calls.clear()

    run_job(make_job(jobs.async_job), [datetime.now(UTC)], Recorder())

    assert jobs.calls == ["async_job"]
    assert Execution.objects.get().status == Execution.Status.SUCCEEDED


def test_a_run_later_than_its_grace_time_is_recorded_as_missed_and_not_run() -> None:
    jobs.calls.clear()
    late = datetime.now(UTC) - timedelta(seconds=30)

    run_job(make_job(jobs.succeed, grace=10), [late], Recorder())

    assert jobs.calls == []
    execution = Execution.objects.get()
    assert execution.status == Execution.Status.MISSED
    assert "after its misfire grace time of 10 s" in execution.exception


def test_a_fire_that_already_has_an_execution_is_not_run_again() -> None:
    jobs.calls.clear()
    scheduled = datetime.now(UTC)
    run_job(make_job(jobs.succeed), [scheduled], Recorder())
    run_job(make_job(jobs.succeed), [scheduled], Recorder())

    assert jobs.calls == ["succeed"]
    assert Execution.objects.count() == 1


def test_runs_left_running_by_a_dead_scheduler_are_marked_interrupted() -> None:
    dead = SchedulerInstance.objects.create(
        hostname="elsewhere", pid=1, last_beat=timezone.now() - timedelta(hours=1)
    )
    alive = SchedulerInstance.objects.create(hostname="elsewhere", pid=2)
    now = timezone.now()
    orphan = Execution.objects.create(job_id="a", status="running", scheduled_at=now, instance=dead)
    healthy = Execution.objects.create(job_id="b", status="running", scheduled_at=now, instance=alive)

    assert recover_interrupted() == 1

    orphan.refresh_from_db()
    healthy.refresh_from_db()
    assert orphan.status == Execution.Status.INTERRUPTED
    assert orphan.finished_at is not None
    assert healthy.status == Execution.Status.RUNNING


def test_a_scheduler_of_this_kernel_and_pid_namespace_whose_process_is_gone_counts_as_dead() -> None:
    gone = SchedulerInstance.objects.create(hostname=socket.gethostname(), pid=2**22 + 7, **identity.fields())
    Execution.objects.create(job_id="a", status="running", scheduled_at=timezone.now(), instance=gone)

    assert recover_interrupted() == 1


def test_the_periodic_look_is_skipped_for_what_cannot_have_anything_to_do(
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    me = SchedulerInstance.objects.create(hostname="here", pid=1)
    other = SchedulerInstance.objects.create(hostname="there", pid=2)
    now = timezone.now()
    with django_assert_num_queries(1):
        assert pending_work(me, leading=True) == Pending(orphans=False, task_runs=False, alerts=False)

    mine = Execution.objects.create(job_id="a", status="running", scheduled_at=now, instance=me)
    Execution.objects.create(job_id="b", status="succeeded", scheduled_at=now, instance=other)
    assert not pending_work(me, leading=True).orphans  # its own run, and a run that ended
    theirs = Execution.objects.create(job_id="d", status="overrunning", scheduled_at=now, instance=other)
    assert pending_work(me, leading=True).orphans
    assert pending_work(me, leading=False).orphans  # a standby recovers too
    Execution.objects.filter(pk__in=[mine.pk, theirs.pk]).delete()

    Execution.objects.create(job_id="c", status="enqueued", scheduled_at=now, ran_in="tasks")
    assert pending_work(me, leading=True) == Pending(orphans=False, task_runs=True, alerts=False)
    assert not pending_work(me, leading=False).task_runs  # expiring them is the leader's
    Execution.objects.filter(job_id="c").delete()

    alert = Alert.objects.create(key="k", job_id="a", rule="failure", message="m")
    later = AlertDelivery.objects.create(
        alert=alert, destination="log", next_attempt_at=now + timedelta(hours=1)
    )
    assert not pending_work(me, leading=True).alerts  # closed, and its delivery not due yet
    AlertDelivery.objects.filter(pk=later.pk).update(next_attempt_at=now)
    assert pending_work(me, leading=True).alerts
    AlertDelivery.objects.filter(pk=later.pk).update(status=AlertDelivery.Status.SENT)
    assert not pending_work(me, leading=True).alerts
    Alert.objects.filter(pk=alert.pk).update(open=True)
    assert pending_work(me, leading=True).alerts
    assert not pending_work(me, leading=False).alerts

    SchedulerInstance.objects.filter(pk=me.pk).delete()
    assert pending_work(me, leading=True) == EVERYTHING


def test_prune_deletes_old_finished_history_in_batches_and_keeps_recent_and_running_rows() -> None:
    now = timezone.now()
    old = [
        Execution(job_id="a", status="succeeded", scheduled_at=now - timedelta(days=40, seconds=i))
        for i in range(25)
    ]
    Execution.objects.bulk_create(old)
    Execution.objects.create(job_id="a", status="running", scheduled_at=now - timedelta(days=40, hours=1))
    Execution.objects.create(job_id="a", status="failed", scheduled_at=now - timedelta(days=1))

    assert prune(older_than=timedelta(days=30), batch_size=10) == 25

    assert sorted(Execution.objects.values_list("status", flat=True)) == ["failed", "running"]


def test_history_recorded_by_plain_django_apscheduler_is_imported() -> None:
    DjangoJob.objects.create(id="legacy", next_run_time=None, job_state=b"")
    run_time = timezone.now() - timedelta(hours=1)
    DjangoJobExecution.objects.create(
        job_id="legacy", status="Executed", run_time=run_time, finished=run_time.timestamp() + 2, duration=2
    )
    DjangoJobExecution.objects.create(
        job_id="legacy",
        status="Error!",
        run_time=run_time - timedelta(minutes=1),
        exception="boom",
        traceback="tb",
    )
    migration = importlib.import_module("scheduling.migrations.0002_import_django_apscheduler_history")

    migration.import_history(apps, None)

    imported = {row.status: row for row in Execution.objects.filter(job_id="legacy")}
    assert set(imported) == {"succeeded", "failed"}
    assert imported["failed"].exception == "boom"
    assert imported["succeeded"].origin == Execution.Origin.IMPORTED
    finished_at = imported["succeeded"].finished_at
    assert finished_at is not None
    assert abs(finished_at - (run_time + timedelta(seconds=2))) < timedelta(seconds=1)


@pytest.mark.parametrize("func", [jobs.remember_run, jobs.async_remember_run])
def test_a_job_knows_the_run_it_serves(func: object) -> None:
    jobs.calls.clear()
    scheduled = datetime.now(UTC)

    run_job(make_job(func), [scheduled], Recorder())

    assert jobs.calls == [f"job@{scheduled.isoformat()}"]
    assert current_run() is None, "outside a job there is no current run"


def old_history(job_id: str) -> list[tuple]:
    DjangoJobExecution.objects.create(job_id=job_id, status="Executed", run_time=timezone.now())
    return list(DjangoJobExecution.objects.values_list())


def test_deleting_a_job_django_apschedulers_history_refers_to_is_refused_naming_it(registry: dict) -> None:
    job(interval=60, id="migrated")(jobs.succeed)
    job(interval=60, id="new")(jobs.succeed)
    sync(JobStore(), registry.values())
    before = old_history("migrated")

    with pytest.raises(
        control.OldHistoryError, match=r"Job 'migrated' is not deleted: .* has 1 run\(s\) of it"
    ):
        control.delete("migrated")
    control.delete("new")

    assert list(DjangoJob.objects.values_list("id", flat=True)) == ["migrated"]
    assert list(DjangoJobExecution.objects.values_list()) == before


def test_a_finished_one_off_job_django_apschedulers_history_refers_to_is_kept_paused_with_that_history(
    registry: dict,
) -> None:
    job(date=timezone.now() + timedelta(seconds=30), id="once-migrated")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    before = old_history("once-migrated")
    recorder = Recorder()
    pool = ThreadTarget(recorder, max_workers=1)
    try:
        Dispatcher(store, recorder, run_targets(pool)).dispatch(
            store.get_all_jobs(), timezone.now() + timedelta(seconds=31)
        )
        assert pool.wait(10)
    finally:
        pool.shutdown()

    assert Execution.objects.get(job_id="once-migrated").status == "succeeded"
    assert DjangoJob.objects.get(id="once-migrated").next_run_time is None
    assert list(DjangoJobExecution.objects.values_list()) == before


def test_the_database_itself_keeps_a_job_row_django_apschedulers_history_refers_to() -> None:
    # Why deleting such a job is refused rather than done without Django's cascade (docs/design.md).
    DjangoJob.objects.create(id="anchored", next_run_time=None, job_state=b"")
    before = old_history("anchored")

    with pytest.raises(IntegrityError), transaction.atomic():
        DjangoJob.objects.filter(id="anchored")._raw_delete(DjangoJob.objects.db)

    assert DjangoJob.objects.filter(id="anchored").exists()
    assert list(DjangoJobExecution.objects.values_list()) == before


def test_the_rows_a_recorder_builds_are_those_the_orm_builds() -> None:
    instance = SchedulerInstance.objects.create(hostname="here", pid=7)
    recorder = Recorder(instance)
    when = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)

    def fields(row: Execution) -> dict:
        state = row._state
        return {**{k: v for k, v in vars(row).items() if k != "_state"}, "state": (state.adding, state.db)}

    running = recorder.running_row("a", when)
    not_run = recorder.not_run_row("b", when, Execution.Status.MISSED, "late")
    orm_running = Execution(
        **{k: v for k, v in fields(running).items() if k not in ("state", "instance_id")}, instance=instance
    )
    orm_not_run = Execution(
        **{k: v for k, v in fields(not_run).items() if k not in ("state", "instance_id")}, instance=instance
    )

    assert fields(running) == fields(orm_running)
    assert fields(not_run) == fields(orm_not_run)
    assert running.instance is instance
    # The rows share their defaults: none may be a mutable object.
    assert all(
        isinstance(value, str | int | float | bool | datetime | uuid.UUID | type(None))
        for value in vars(running).values()
        if not isinstance(value, type(running._state))
    )
    running.save()
    assert Execution.objects.get(pk=running.pk).instance_id == instance.pk
