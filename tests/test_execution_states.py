"""The states of a run and their changes, on Execution.objects: each change one UPDATE, conditioned
on the state it leaves, so of two writers racing for a run one wins and the other is told."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import QuerySet
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from scheduling.models import Execution, SchedulerInstance

pytestmark = pytest.mark.django_db

Status = Execution.Status


def run(job_id: str, status: str, ran_in: str = "threads", **fields: object) -> Execution:
    return Execution.objects.create(
        job_id=job_id, status=status, ran_in=ran_in, scheduled_at=timezone.now(), **fields
    )


def job_ids(executions: QuerySet[Execution]) -> list[str]:
    return sorted(executions.values_list("job_id", flat=True))


@pytest.fixture
def one_of_each() -> None:
    for status in Status:
        run(status.value, status)


@pytest.mark.usefixtures("one_of_each")
def test_each_state_has_its_filter() -> None:
    assert job_ids(Execution.objects.enqueued()) == ["enqueued"]
    assert job_ids(Execution.objects.running()) == ["overrunning", "running"]
    assert job_ids(Execution.objects.unfinished()) == ["enqueued", "overrunning", "queued", "running"]
    assert job_ids(Execution.objects.finished()) == [
        "cancelled",
        "failed",
        "interrupted",
        "missed",
        "skipped",
        "succeeded",
        "timed_out",
    ]
    assert job_ids(Execution.objects.completed()) == ["failed", "succeeded"]
    assert job_ids(Execution.objects.interrupted()) == ["interrupted"]


def test_runs_are_told_apart_by_where_they_run_and_which_scheduler_recorded_them() -> None:
    mine = SchedulerInstance.objects.create(hostname="here", pid=1)
    other = SchedulerInstance.objects.create(hostname="there", pid=2)
    run("thread", Status.RUNNING, "threads", instance=mine)
    run("process", Status.RUNNING, "processes", instance=other)
    run("task", Status.ENQUEUED, "tasks", instance=mine)
    run("script", Status.RUNNING)

    assert job_ids(Execution.objects.in_task_workers()) == ["task"]
    assert job_ids(Execution.objects.in_scheduler()) == ["process", "script", "thread"]
    assert job_ids(Execution.objects.of_instance(mine)) == ["task", "thread"]
    assert job_ids(Execution.objects.of_instance(None)) == ["script"]
    assert job_ids(Execution.objects.elsewhere(mine)) == ["process", "script"]
    assert job_ids(Execution.objects.elsewhere(None)) == ["process", "task", "thread"]


@pytest.mark.usefixtures("one_of_each")
def test_mark_interrupted_changes_only_runs_still_running(
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    with django_assert_num_queries(1):
        assert Execution.objects.mark_interrupted("Interrupted: the test stopped it") == 2

    interrupted = Execution.objects.get(job_id="running")
    assert interrupted.status == Status.INTERRUPTED
    assert interrupted.exception == "Interrupted: the test stopped it"
    assert interrupted.finished_at is not None
    assert job_ids(Execution.objects.interrupted()) == ["interrupted", "overrunning", "running"]
    assert Execution.objects.mark_interrupted("again") == 0


def test_a_worker_claims_an_enqueued_run_once(django_assert_num_queries: DjangoAssertNumQueries) -> None:
    execution = run("job", Status.ENQUEUED, "tasks")
    started = timezone.now()
    this_run = Execution.objects.filter(pk=execution.pk)

    with django_assert_num_queries(1):
        assert this_run.claim("task-1", "worker-host", 42, started) is True
    assert this_run.claim("task-2", "other-host", 43, started) is False

    execution.refresh_from_db()
    assert execution.status == Status.RUNNING
    assert (execution.task_id, execution.hostname, execution.pid) == ("task-1", "worker-host", 42)
    assert execution.started_at == started


@pytest.mark.parametrize("status", [Status.RUNNING, Status.INTERRUPTED])
def test_a_run_that_left_the_enqueued_state_cannot_be_claimed(status: str) -> None:
    execution = run("job", status, "tasks")

    assert Execution.objects.filter(pk=execution.pk).claim("task-1", "host", 1, timezone.now()) is False

    execution.refresh_from_db()
    assert execution.status == status
    assert execution.task_id == ""


def test_end_unstarted_ends_only_enqueued_runs_with_where_they_ended(
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    waiting = run("waiting", Status.ENQUEUED, "tasks")
    taken = run("taken", Status.RUNNING, "tasks")
    finished_at = timezone.now() - timedelta(seconds=1)

    with django_assert_num_queries(1):
        ended = Execution.objects.end_unstarted(
            Status.MISSED, "Missed: too late", "trace", finished_at=finished_at, hostname="w", pid=7
        )

    assert ended == 1
    waiting.refresh_from_db()
    taken.refresh_from_db()
    assert (waiting.status, waiting.exception, waiting.traceback) == (
        Status.MISSED,
        "Missed: too late",
        "trace",
    )
    assert (waiting.finished_at, waiting.hostname, waiting.pid) == (finished_at, "w", 7)
    assert taken.status == Status.RUNNING


def test_end_unstarted_defaults_its_end_to_now() -> None:
    waiting = run("waiting", Status.ENQUEUED, "tasks")
    before = timezone.now()

    assert Execution.objects.end_unstarted(Status.INTERRUPTED, "Interrupted: never taken") == 1

    waiting.refresh_from_db()
    assert waiting.status == Status.INTERRUPTED
    assert waiting.finished_at is not None
    assert waiting.finished_at >= before
