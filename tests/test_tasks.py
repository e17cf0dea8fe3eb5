"""Jobs placed in task workers: enqueued by the scheduler, run and recorded by django-tasks-db's worker."""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from scheduling import job
from scheduling.declarations import JobDeclarationError
from scheduling.history.housekeeping import expire_task_runs
from scheduling.history.rows import Outcome
from scheduling.models import Execution, RunRequest
from scheduling.placement import Placement, RunsIn
from scheduling.runs import worker_task
from scheduling.runs.worker_task import run_enqueued, run_scheduled_job
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off

pytestmark = pytest.mark.django_db(transaction=True)


def make_due(store: JobStore, seconds: float = 31) -> list:
    stored = store.get_all_jobs()
    for due in stored:
        due.next_run_time -= timedelta(seconds=seconds)
    store.update_jobs(stored)
    now = datetime.now(UTC)
    due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
    return due


def dispatch_due(registry: dict, dispatcher: Dispatcher) -> None:
    sync(dispatcher.store, registry.values())
    due = make_due(dispatcher.store)
    dispatcher.dispatch(due, datetime.now(UTC))


def test_a_fire_is_recorded_as_enqueued_with_its_task_then_run_and_recorded_by_the_worker(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="in-tasks", runs_in="tasks", task_queue="reports")(jobs.remember_run)
    jobs.calls.clear()

    dispatch_due(registry, dispatcher)

    execution = Execution.objects.get(job_id="in-tasks")
    assert (execution.status, execution.ran_in, execution.started_at) == ("enqueued", "tasks", None)
    task = DBTaskResult.objects.get()
    assert execution.task_id == str(task.id)
    assert (task.queue_name, task.args_kwargs) == ("reports", {"args": [execution.pk], "kwargs": {}})
    # Frozen in the INSERT that recorded the run, for a worker that finds the job gone.
    assert execution.call == {
        "func": "tests.support.jobs:remember_run",
        "args": [],
        "kwargs": {},
        "misfire_grace_time": 60,
    }

    work_off()

    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.started_at is not None
    assert execution.duration is not None
    assert (execution.hostname, execution.pid) == (socket.gethostname(), os.getpid())
    assert jobs.calls == [f"in-tasks@{execution.scheduled_at.isoformat()}"]  # current_run() works there
    task.refresh_from_db()
    assert task.status == "SUCCESSFUL"


def test_a_database_error_reading_the_policy_leaves_the_run_enqueued_not_running_without_an_end(
    registry: dict, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    job(interval=30, id="in-tasks", runs_in="tasks")(jobs.remember_run)
    dispatch_due(registry, dispatcher)
    execution = Execution.objects.get()

    def fail(*args: Any) -> Any:
        raise OperationalError("the database went away")

    monkeypatch.setattr(worker_task, "policies_of", fail)
    with pytest.raises(OperationalError):
        run_enqueued(execution.pk, "task-1")
    execution.refresh_from_db()
    assert (execution.status, execution.started_at) == ("enqueued", None)  # another delivery may take it
    monkeypatch.undo()
    outcome = run_enqueued(execution.pk, "task-2")
    assert isinstance(outcome, Outcome)
    assert outcome.status == "succeeded"


def test_a_task_delivered_twice_runs_its_job_once(registry: dict, dispatcher: Dispatcher) -> None:
    job(interval=30, id="twice", runs_in="tasks")(jobs.remember_run)
    dispatch_due(registry, dispatcher)
    execution = Execution.objects.get()
    jobs.calls.clear()

    first = run_enqueued(execution.pk, "task-1")
    second = run_enqueued(execution.pk, "task-2")

    assert isinstance(first, Outcome)
    assert first.status == "succeeded"
    assert (
        second
        == f"Not run: execution {execution.pk} (twice) is succeeded in tasks, not enqueued for a task worker"
    )
    assert len(jobs.calls) == 1


def test_a_failing_job_is_recorded_failed_with_its_traceback_and_fails_its_task(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="fails-in-tasks", runs_in="tasks")(jobs.fail)

    dispatch_due(registry, dispatcher)
    work_off()

    execution = Execution.objects.get(job_id="fails-in-tasks")
    assert execution.status == "failed"
    assert execution.exception == "ValueError: this job fails on purpose"
    assert 'raise ValueError("this job fails on purpose")' in execution.traceback
    assert DBTaskResult.objects.get().status == "FAILED"


def test_max_instances_counts_runs_still_enqueued(registry: dict, dispatcher: Dispatcher) -> None:
    job(interval=30, id="busy", runs_in="tasks")(jobs.succeed)
    dispatch_due(registry, dispatcher)  # enqueued, no worker yet

    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))

    assert list(Execution.objects.order_by("pk").values_list("status", flat=True)) == [
        "enqueued",
        "skipped",
    ]
    assert DBTaskResult.objects.count() == 1


def test_max_instances_of_many_task_jobs_due_together_is_counted_in_one_query(
    registry: dict, dispatcher: Dispatcher
) -> None:
    for number in range(20):
        job(interval=30, id=f"many-{number}", runs_in="tasks")(jobs.succeed)
    sync(dispatcher.store, registry.values())
    due = make_due(dispatcher.store)

    with CaptureQueriesContext(connection) as queries:
        dispatcher.dispatch(due, datetime.now(UTC))

    counts = [query["sql"] for query in queries.captured_queries if "COUNT(" in query["sql"].upper()]
    assert len(counts) == 1, counts
    assert Execution.objects.filter(status="enqueued").count() == 20


def test_a_run_that_waited_in_the_queue_past_its_misfire_grace_is_recorded_missed(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="waited", runs_in="tasks", misfire_grace_time=5)(jobs.succeed)
    jobs.calls.clear()
    dispatch_due(registry, dispatcher)
    Execution.objects.update(scheduled_at=timezone.now() - timedelta(seconds=60))

    work_off()

    execution = Execution.objects.get()
    assert execution.status == "missed"
    assert "waited in the task queue" in execution.exception
    assert jobs.calls == []


def test_runs_no_worker_finishes_are_recorded_interrupted_after_the_task_timeout(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="lost", runs_in="tasks", misfire_grace_time=None)(jobs.succeed)
    dispatch_due(registry, dispatcher)
    waiting = Execution.objects.get()
    running = Execution.objects.create(
        job_id="lost",
        status="running",
        ran_in="tasks",
        scheduled_at=timezone.now() - timedelta(seconds=50),
        started_at=timezone.now() - timedelta(seconds=40),
    )

    assert expire_task_runs(timeout=60) == 0
    Execution.objects.filter(pk=waiting.pk).update(enqueued_at=timezone.now() - timedelta(seconds=61))
    assert expire_task_runs(timeout=30) == 2

    waiting.refresh_from_db()
    running.refresh_from_db()
    assert waiting.status == running.status == "interrupted"
    assert "no task worker took the run within 30 s" in waiting.exception
    assert "sent no outcome within 30 s" in running.exception
    jobs.calls.clear()
    work_off()  # the worker that finally takes the expired run leaves it alone
    waiting.refresh_from_db()
    assert waiting.status == "interrupted"
    assert jobs.calls == []


def test_a_one_off_job_runs_on_a_worker_although_it_left_the_store_when_it_fired(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(date=timezone.now() + timedelta(seconds=30), id="once", runs_in="tasks")(jobs.remember_run)
    jobs.calls.clear()

    dispatch_due(registry, dispatcher)
    assert dispatcher.store.lookup_job("once") is None
    work_off()

    execution = Execution.objects.get()
    assert execution.status == "succeeded"
    assert jobs.calls == [f"once@{execution.scheduled_at.isoformat()}"]


def forge(execution_id: object, payload: dict | None = None) -> DBTaskResult:
    """Enqueue a task by hand through the real backend, as anyone able to write to the queue could."""
    args: list[Any] = [execution_id] if payload is None else [execution_id, payload]  # anything, forged
    result = run_scheduled_job.enqueue(*args)
    return DBTaskResult.objects.get(pk=result.id)


def os_system(marker: Path) -> dict:
    """The payload of a task as today's code enqueued it, naming a command instead of the job."""
    return {"func": "os:system", "args": [f"touch {marker}"], "kwargs": {}, "misfire_grace_time": None}


def test_a_task_naming_another_function_runs_the_stored_job_and_ignores_its_payload(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    job(interval=30, id="hijacked", runs_in="tasks")(jobs.remember_run)
    dispatch_due(registry, dispatcher)
    execution = Execution.objects.get()
    DBTaskResult.objects.all().delete()  # only the forged task is left for the worker
    marker = tmp_path / "pwned"
    forged = forge(execution.pk, os_system(marker))
    jobs.calls.clear()

    work_off()

    assert not marker.exists()
    assert jobs.calls == [f"hijacked@{execution.scheduled_at.isoformat()}"]
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    forged.refresh_from_db()
    assert forged.status == "SUCCESSFUL"  # the old payload shape is still accepted


def test_forged_and_replayed_tasks_run_nothing_and_say_why(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    job(interval=30, id="replayed", runs_in="tasks")(jobs.succeed)
    dispatch_due(registry, dispatcher)
    work_off()
    finished = Execution.objects.get()
    in_threads = Execution.objects.create(
        job_id="replayed", status="running", scheduled_at=timezone.now(), started_at=timezone.now()
    )
    marker = tmp_path / "pwned"
    jobs.calls.clear()
    forged = {
        "replay": forge(finished.pk),
        "replay with a payload": forge(finished.pk, os_system(marker)),
        "a run in the scheduler's threads": forge(in_threads.pk, os_system(marker)),
        "no such run": forge(finished.pk + 1000, os_system(marker)),
        "not an id": forge("1 OR 1=1", os_system(marker)),
    }

    work_off()

    assert not marker.exists()
    assert jobs.calls == []
    reasons = {what: DBTaskResult.objects.get(pk=task.pk).return_value for what, task in forged.items()}
    assert reasons == {
        "replay": f"Not run: execution {finished.pk} (replayed) is succeeded in tasks, not enqueued for a "
        "task worker",
        "replay with a payload": f"Not run: execution {finished.pk} (replayed) is succeeded in tasks, not "
        "enqueued for a task worker",
        "a run in the scheduler's threads": f"Not run: execution {in_threads.pk} (replayed) is running in "
        "threads, not enqueued for a task worker",
        "no such run": f"Not run: there is no execution {finished.pk + 1000}",
        "not an id": "Not run: '1 OR 1=1' is not an execution id",
    }
    assert list(Execution.objects.order_by("pk").values_list("status", "finished_at")) == [
        ("succeeded", finished.finished_at),
        ("running", None),
    ]


def test_a_stored_job_whose_function_is_not_declared_is_refused_with_the_reason(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job(interval=30, id="tampered", runs_in="tasks")(jobs.succeed)
    sync(dispatcher.store, registry.values())
    marker = tmp_path / "made-by-the-job"
    # e.g. a row written outside the code
    dispatcher.store.modify_job(dispatcher.store.lookup_job("tampered"), func="os:mkdir", args=[str(marker)])
    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))

    work_off()

    assert not marker.exists()
    execution = Execution.objects.get()
    assert execution.status == "failed"
    assert execution.exception == (
        "Refused: os:mkdir is not a function declared with @job or @schedulable in the code of this "
        "worker; not running it"
    )
    assert execution.finished_at is not None
    assert DBTaskResult.objects.get().status == "FAILED"
    assert f"Job tampered: {execution.exception}" in caplog.messages


def test_a_one_off_run_whose_frozen_copy_names_an_undeclared_function_is_refused(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    job(date=timezone.now() + timedelta(seconds=30), id="once-tampered", runs_in="tasks")(jobs.succeed)
    dispatch_due(registry, dispatcher)
    assert dispatcher.store.lookup_job("once-tampered") is None
    marker = tmp_path / "pwned"
    Execution.objects.update(call=os_system(marker))
    jobs.calls.clear()

    work_off()

    assert not marker.exists()
    assert jobs.calls == []
    execution = Execution.objects.get()
    assert execution.status == "failed"
    assert execution.exception.startswith("Refused: os:system is not a function declared with @job")


def test_a_one_off_run_queued_without_a_frozen_copy_is_refused_once_its_job_left_the_store(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    # A run recorded by an earlier version: its task carried the call, the row none.
    job(date=timezone.now() + timedelta(seconds=30), id="once-old", runs_in="tasks")(jobs.succeed)
    dispatch_due(registry, dispatcher)
    execution = Execution.objects.get()
    Execution.objects.update(call=None)
    DBTaskResult.objects.all().delete()
    marker = tmp_path / "pwned"
    forge(execution.pk, os_system(marker))

    work_off()

    assert not marker.exists()
    execution.refresh_from_db()
    assert execution.status == "failed"
    assert execution.exception == (
        "Refused: job once-old is not in the job store and its run has no frozen copy of what to run "
        "(recorded by an earlier version, or its arguments are not JSON); not running anything"
    )


def test_a_run_that_cannot_be_enqueued_is_recorded_failed_with_the_reason(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="nowhere", runs_in="tasks")(jobs.succeed)
    sync(dispatcher.store, registry.values())
    stored = dispatcher.store.lookup_job("nowhere")
    stored.executor = Placement(RunsIn.TASKS, "default", "no-such-queue").alias  # e.g. edited in a shell
    dispatcher.store.update_job(stored)

    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))

    execution = Execution.objects.get()
    assert execution.status == "failed"
    assert execution.exception.startswith(
        "Could not enqueue the run for task workers (backend 'default', queue 'no-such-queue'): "
    )
    assert "no-such-queue" in execution.exception


def test_run_now_enqueues_a_manual_run(registry: dict) -> None:
    job(interval=3600, id="manual-in-tasks", runs_in="tasks")(jobs.succeed)
    runner = Runner()
    runner.start()
    try:
        RunRequest.objects.create(job_id="manual-in-tasks", requested_by="alice")
        execution = wait_for(lambda: Execution.objects.filter(requested_by="alice", task_id__gt="").first())
        assert (execution.status, execution.origin) == ("enqueued", "manual")
        assert execution.call["func"] == "tests.support.jobs:succeed"
        RunRequest.objects.create(job_id="manual-in-tasks", requested_by="bob")  # max_instances 1
        skipped = wait_for(lambda: Execution.objects.filter(requested_by="bob").first())
        assert skipped.status == "skipped"
    finally:
        runner.stop()
    assert Execution.objects.get(requested_by="alice").status == "enqueued"  # stopping leaves it queued
    work_off()
    assert Execution.objects.get(requested_by="alice").status == "succeeded"


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("ImmediateBackend", "which runs each task at once inside the scheduler's loop"),
        ("DummyBackend", "which never runs tasks"),
    ],
)
def test_backends_without_workers_are_refused(registry: dict, settings, backend: str, message: str) -> None:
    package = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    settings.TASKS = {
        **settings.TASKS,
        "inline": {"BACKEND": f"{package}.backends.{backend.lower()[:-7]}.{backend}"},
    }

    with pytest.raises(JobDeclarationError, match=message):
        job(interval=30, id="inline", runs_in="tasks", task_backend="inline")(jobs.succeed)


def test_placing_a_job_in_tasks_without_the_tasks_framework_says_what_to_install(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if django.tasks could not be imported.
    monkeypatch.setitem(sys.modules, "scheduling.runs.worker_task", None)

    with pytest.raises(
        JobDeclarationError, match="runs_in='tasks' needs Django's tasks framework: Django 6, or"
    ):
        job(interval=30, id="no-framework", runs_in="tasks")(jobs.succeed)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runs_in": "cluster"}, "runs_in must be one of 'threads', 'processes', 'tasks', not 'cluster'"),
        ({"task_queue": "reports"}, "task_backend and task_queue apply only to jobs with runs_in='tasks'"),
        ({"runs_in": "tasks", "task_backend": "redis"}, "task_backend 'redis' is not configured in TASKS"),
        (
            {"runs_in": "tasks", "task_queue": "nightly"},
            "task_queue 'nightly' cannot be used on backend 'default'",
        ),
    ],
)
def test_a_placement_that_cannot_work_fails_the_declaration_naming_the_job(
    registry: dict, options: dict, message: str
) -> None:
    with pytest.raises(JobDeclarationError) as raised:
        job(interval=30, id="misplaced", **options)(jobs.succeed)

    assert str(raised.value).startswith("Job 'misplaced': ")
    assert message in str(raised.value)


def test_a_job_with_arguments_that_are_not_json_does_not_stop_the_runs_due_with_it(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    job(interval=30, id="plain", runs_in="tasks")(jobs.succeed)
    job(interval=30, id="path-argument", runs_in="tasks", args=["unused"])(jobs.note_process)
    sync(dispatcher.store, registry.values())
    # A Path: picklable, not JSON (e.g. added in a shell).
    dispatcher.store.modify_job(dispatcher.store.lookup_job("path-argument"), args=[tmp_path / "noted"])

    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))

    rows: dict[str, Any] = dict(Execution.objects.values_list("job_id", "call"))
    assert rows["path-argument"] is None
    assert rows["plain"]["func"] == "tests.support.jobs:succeed"
    work_off()
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    assert (tmp_path / "noted").exists()  # read from the store


@pytest.mark.processes
def test_a_db_worker_process_runs_the_recorded_run_and_nothing_forged_tasks_name(
    registry: dict, dispatcher: Dispatcher, scheduler_process, tmp_path: Path
) -> None:
    notes, marker = tmp_path / "notes", tmp_path / "pwned"
    job(interval=30, id="guarded", runs_in="tasks", args=[str(notes)])(jobs.note_process)
    dispatch_due(registry, dispatcher)
    legit = Execution.objects.get()
    # A run recorded as enqueued whose frozen copy names a command (written by hand in the table).
    ghost = Execution.objects.create(
        job_id="ghost", status="enqueued", ran_in="tasks", scheduled_at=timezone.now(), call=os_system(marker)
    )
    forge(legit.pk, os_system(marker))
    forge(ghost.pk)
    forge(legit.pk + 1000, os_system(marker))

    # Its code declares the job as this test does: autodiscovered at start, as runscheduler does.
    worker = scheduler_process(
        "tests.support.process_jobs_guarded",
        env={"TEST_NOTES_FILE": str(notes)},
        command="db_worker",
        started_text="Starting worker",
        args=["--interval", "0.05", "--no-startup-delay", "--no-reload", "--worker-id", "guarded"],
    )
    wait_for(lambda: not DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).exists(), timeout=60)

    assert not marker.exists()
    legit.refresh_from_db()
    assert (legit.status, legit.pid) == ("succeeded", worker.popen.pid)
    assert notes.read_text() == f"{worker.popen.pid} {legit.scheduled_at.isoformat()}\n"  # once
    ghost.refresh_from_db()
    assert ghost.status == "failed"
    assert ghost.exception.startswith("Refused: os:system is not a function declared with @job")
    results = sorted(DBTaskResult.objects.values_list("status", "return_value"), key=str)
    assert results == sorted(
        [
            ("SUCCESSFUL", "succeeded"),
            (
                "SUCCESSFUL",
                f"Not run: execution {legit.pk} (guarded) is succeeded in tasks, not enqueued "
                "for a task worker",
            ),
            ("FAILED", None),
            ("SUCCESSFUL", f"Not run: there is no execution {legit.pk + 1000}"),
        ],
        key=str,
    )
