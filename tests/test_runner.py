"""The scheduler service driven in-process: loop, pick-up of outside changes, heartbeat, stop."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job
from scheduling.models import Execution, RunRequest, SchedulerInstance
from scheduling.queries import job_summaries
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runner(registry: dict) -> Iterator[Runner]:
    runner = Runner(threads=4)
    yield runner
    if runner.scheduler is not None and runner.scheduler.running:
        runner.stop(timeout=5)


def runs(job_id: str) -> int:
    return Execution.objects.filter(job_id=job_id).count()


def test_declared_jobs_run_and_every_run_is_recorded(runner: Runner) -> None:
    job(interval={"seconds": 1}, id="tick")(jobs.succeed)
    job(interval={"seconds": 1}, id="broken-on-purpose")(jobs.fail)
    runner.start()

    wait_for(lambda: runs("tick") >= 2 and runs("broken-on-purpose") >= 2, timeout=10)

    assert set(Execution.objects.filter(job_id="tick").values_list("status", flat=True)) <= {
        "succeeded",
        "running",
    }
    assert Execution.objects.filter(job_id="broken-on-purpose", status="failed").exists()
    assert {job.id for job in job_summaries()} == {"tick", "broken-on-purpose"}


def test_a_reschedule_made_elsewhere_is_obeyed_within_a_second(runner: Runner) -> None:
    job(interval={"hours": 1}, id="hourly")(jobs.succeed)
    runner.start()
    time.sleep(0.2)  # let the loop settle into its hour-long sleep

    changed = timezone.now()
    control.reschedule("hourly", interval={"seconds": 1})

    # Its row is recorded ahead of its time, without a start (fire-ahead): waited for once started.
    started = Execution.objects.filter(job_id="hourly", started_at__isnull=False)
    execution = wait_for(started.first, timeout=5)
    assert execution.started_at - changed < timedelta(seconds=2.2)
    # The new schedule's first fire is one interval after the change; it must start on time.
    assert execution.started_at - execution.scheduled_at < timedelta(seconds=1)


def test_a_pause_through_the_orm_stops_runs_and_a_resume_restarts_them(runner: Runner) -> None:
    job(interval={"seconds": 1}, id="tick")(jobs.succeed)
    runner.start()
    wait_for(lambda: runs("tick") >= 1)

    DjangoJob.objects.filter(id="tick").update(next_run_time=None)
    time.sleep(0.6)  # a run already handed to a worker may still be recorded
    paused_count = runs("tick")
    time.sleep(2)
    assert runs("tick") == paused_count

    control.resume("tick")
    wait_for(lambda: runs("tick") > paused_count, timeout=3)


def test_a_job_deleted_elsewhere_stops_running_without_disturbing_the_loop(runner: Runner) -> None:
    job(interval={"seconds": 1}, id="tick")(jobs.succeed)
    job(interval={"seconds": 1}, id="other")(jobs.succeed)
    runner.start()
    wait_for(lambda: runs("tick") >= 1)

    control.delete("tick")
    time.sleep(0.6)
    count = runs("tick")
    other = runs("other")

    wait_for(lambda: runs("other") >= other + 2, timeout=5)
    assert runs("tick") == count


def test_the_heartbeat_says_who_runs_and_stop_records_the_end(runner: Runner) -> None:
    runner.start()
    instance = runner.instance
    assert instance is not None
    first_beat = SchedulerInstance.objects.get(pk=instance.pk).last_beat

    wait_for(lambda: SchedulerInstance.objects.get(pk=instance.pk).last_beat > first_beat, timeout=5)
    assert SchedulerInstance.objects.alive().filter(pk=instance.pk).exists()

    runner.stop(timeout=1)
    stopped = SchedulerInstance.objects.get(pk=instance.pk)
    assert stopped.stopped_at is not None
    assert not SchedulerInstance.objects.alive().filter(pk=instance.pk).exists()


def test_stop_waits_for_running_jobs_up_to_the_timeout_then_records_them_interrupted(runner: Runner) -> None:
    job(interval={"seconds": 1}, id="long", args=[2])(jobs.sleep)
    runner.start()
    # Started, not only claimed ahead of its time (fire-ahead: a row without a start).
    wait_for(
        lambda: Execution.objects.filter(job_id="long", status="running", started_at__isnull=False).exists(),
        timeout=5,
    )

    assert runner.stop(timeout=0.2) == 1

    execution = Execution.objects.get(job_id="long")
    assert execution.status == Execution.Status.INTERRUPTED
    assert "did not wait longer than 0.2 s" in execution.exception
    # The thread finishing later must not overwrite the recorded interruption.
    assert runner.thread_runs.wait(5)
    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED


def test_a_fire_while_the_previous_run_is_still_going_is_recorded_as_skipped(runner: Runner) -> None:
    job(interval={"seconds": 1}, id="slow", args=[2.5], max_instances=1)(jobs.sleep)
    runner.start()

    skipped = wait_for(lambda: Execution.objects.filter(job_id="slow", status="skipped").first(), timeout=10)

    assert "max_instances" in skipped.exception
    assert Execution.objects.filter(job_id="slow").exclude(status="skipped").count() >= 1


def test_run_now_is_taken_by_the_scheduler_within_a_second_and_leaves_the_schedule_alone(
    runner: Runner,
) -> None:
    job(interval={"hours": 1}, id="hourly")(jobs.succeed)
    runner.start()
    next_run = DjangoJob.objects.get(id="hourly").next_run_time

    request = control.run_now("hourly", requested_by="alice")

    execution = wait_for(
        lambda: Execution.objects.filter(job_id="hourly", status="succeeded").first(), timeout=5
    )
    assert execution.origin == Execution.Origin.MANUAL
    assert execution.requested_by == "alice"
    assert execution.scheduled_at == request.requested_at
    assert execution.started_at - request.requested_at < timedelta(seconds=1)
    assert DjangoJob.objects.get(id="hourly").next_run_time == next_run
    assert not RunRequest.objects.exists()


def test_run_now_while_the_job_runs_is_recorded_as_skipped(runner: Runner) -> None:
    job(interval={"hours": 1}, id="long", args=[1.5])(jobs.sleep)
    runner.start()
    control.run_now("long", requested_by="alice")
    wait_for(lambda: Execution.objects.filter(job_id="long", status="running").exists(), timeout=5)

    control.run_now("long", requested_by="bob")

    skipped = wait_for(lambda: Execution.objects.filter(job_id="long", status="skipped").first(), timeout=5)
    assert (skipped.origin, skipped.requested_by) == (Execution.Origin.MANUAL, "bob")


def test_run_now_of_a_job_whose_function_is_gone_records_the_failure(runner: Runner) -> None:
    job(interval={"hours": 1}, id="hourly")(jobs.succeed)
    runner.start()
    row = DjangoJob.objects.get(id="hourly")
    state = pickle.loads(bytes(row.job_state))  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="hourly").update(job_state=pickle.dumps(state))

    control.run_now("hourly", requested_by="alice")

    failed = wait_for(lambda: Execution.objects.filter(job_id="hourly", status="failed").first(), timeout=5)
    assert "renamed_away" in failed.exception


def test_run_now_of_an_unknown_job_is_refused() -> None:
    with pytest.raises(control.UnknownJobError, match="No stored job with id 'nope'"):
        control.run_now("nope")


def test_fires_missed_while_no_scheduler_ran_are_recorded_and_run_once(
    runner: Runner, registry: dict
) -> None:
    job(interval={"seconds": 1}, id="tick", misfire_grace_time=None)(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    stored = store.lookup_job("tick")
    stored.next_run_time = stored.next_run_time - timedelta(seconds=5.5)
    store.update_job(stored)

    runner.start()

    wait_for(lambda: Execution.objects.filter(job_id="tick", status="succeeded").exists(), timeout=5)
    missed = Execution.objects.filter(job_id="tick", status="missed").order_by("scheduled_at")
    assert missed.count() >= 4  # five or more fires fell due: all but the latest recorded as missed
    assert "coalesced into the run scheduled for" in missed[0].exception
    first_run = Execution.objects.filter(job_id="tick", status="succeeded").order_by("scheduled_at").first()
    last_missed = missed.last()
    assert first_run is not None
    assert last_missed is not None
    assert first_run.scheduled_at - last_missed.scheduled_at == timedelta(seconds=1)


# The polling path; on PostgreSQL changes are pushed instead (tests/test_notifications.py).
@override_settings(SCHEDULING_LISTEN=False)
def test_an_idle_scheduler_polls_only_the_earliest_next_run_time(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    job(interval={"hours": 1}, id="later")(jobs.succeed)
    idle = Runner(poll_interval=0.02)
    idle.start()
    try:
        store = idle.store
        dispatches: list[object] = []
        polls: list[object] = []
        due_query, poll_query = store.get_due_jobs_and_next_run_time, store.get_next_run_time

        def due(*args: Any) -> Any:
            dispatches.append(args)
            return due_query(*args)

        def poll() -> Any:
            polls.append(1)
            return poll_query()

        monkeypatch.setattr(store, "get_due_jobs_and_next_run_time", due)
        monkeypatch.setattr(store, "get_next_run_time", poll)

        wait_for(lambda: polls)  # past the dispatch that follows taking the lease
        dispatches.clear()
        wait_for(lambda: len(polls) >= 20)
    finally:
        idle.stop()

    assert dispatches == []  # nothing is due for an hour: no due-jobs query either


def test_a_tick_that_was_under_way_when_the_runner_stopped_ends_quietly(runner: Runner) -> None:
    runner.start()
    runner.stop(timeout=5)

    runner._on_tick()  # the loop thread finishing its last tick: no "scheduler is not running" error
