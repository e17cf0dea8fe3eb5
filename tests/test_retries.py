"""Retries of failed runs: the backoff, which failures retry, each attempt a row of its own,
taken once under the lease, in every placement, across a restart, and refused bad options."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from scheduling import control, job, validation
from scheduling.declarations import JobDeclarationError
from scheduling.fencing import Fence, FenceLost
from scheduling.history import writer
from scheduling.history.attempts import backoff, retries, retry_times
from scheduling.history.housekeeping import expire_task_runs, prune
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Origin, Outcome
from scheduling.models import Execution, ExecutionQuerySet, ScheduledJob
from scheduling.policy import RunPolicy
from scheduling.queries import schedule_summary
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime import dispatch
from scheduling.runtime.dispatch import RETRY_PENDING, Dispatcher
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def failed(*types: str) -> Outcome:
    return Outcome("failed", NOW, NOW, 0.1, "boom", "", types)


# The backoff and the rule, as functions


def test_the_backoff_doubles_from_retry_backoff_is_capped_and_jittered_into_its_upper_half() -> None:
    policy = RunPolicy(retries=5, retry_backoff=30, retry_backoff_max=100)
    assert [backoff(policy, attempt, 0.0) for attempt in (1, 2, 3, 4)] == [15, 30, 50, 50]
    assert backoff(policy, 1, 0.999) == pytest.approx(30, abs=0.1)
    assert 50 <= backoff(policy, 3) < 100
    assert backoff(RunPolicy(retries=100, retry_backoff=86400, retry_backoff_max=7 * 86400), 100, 0.5) > 0


def test_any_exception_retries_by_default_and_retry_on_matches_the_class_and_its_subclasses() -> None:
    connection_error = (
        "builtins.ConnectionError",
        "builtins.OSError",
        "builtins.Exception",
        "builtins.BaseException",
    )
    assert retries(failed(*connection_error), RunPolicy(retries=1))
    assert not retries(failed("builtins.SystemExit", "builtins.BaseException"), RunPolicy(retries=1))
    assert retries(failed(*connection_error), RunPolicy(retries=1, retry_on=("builtins.OSError",)))
    value_error = ("builtins.ValueError", "builtins.Exception", "builtins.BaseException")
    assert not retries(failed(*value_error), RunPolicy(retries=1, retry_on=("builtins.OSError",)))
    assert retries(failed(), RunPolicy(retries=1, retry_on=("builtins.OSError",)))  # a child that died
    assert not retries(Outcome("succeeded", NOW, NOW, 0.1), RunPolicy(retries=1))


def test_only_a_failed_run_with_attempts_left_gets_a_next_attempt_time() -> None:
    ScheduledJob.objects.create(id="report", source="code", run_policy={"retries": 1, "retry_backoff": 10})
    first = Execution(pk=1, job_id="report", attempt=1, attempts=2)
    last = Execution(pk=2, job_id="report", attempt=2, attempts=2)
    interrupted = Execution(pk=3, job_id="report", attempt=1, attempts=2)
    times = retry_times(
        [
            (first, failed()),
            (last, failed()),
            (interrupted, Outcome("interrupted", NOW, NOW, None)),
        ]
    )
    assert list(times) == [1]
    assert NOW + timedelta(seconds=5) <= times[1] < NOW + timedelta(seconds=10)


# Validation, wherever options come in


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retries", -1),
        ("retries", 101),
        ("retries", 1.5),
        ("retry_backoff", 86401),
        ("retry_backoff_max", "60"),
        ("retry_on", [ValueError, 42]),
        ("retry_on", ["no_such_module.Error"]),
        ("retry_on", ["builtins.len"]),
    ],
)
def test_bad_retry_options_are_refused_by_job_naming_the_option(
    registry: dict, option: str, value: Any
) -> None:
    with pytest.raises(JobDeclarationError, match=option):
        job(id="report", interval=60, **{option: value})(jobs.succeed)
    with pytest.raises(validation.InputError) as caught:
        validation.options({option: value})
    assert caught.value.field.startswith(option)


def test_retry_on_takes_classes_and_dotted_names_and_stores_dotted_names(registry: dict) -> None:
    job(
        id="report",
        interval=60,
        retries=3,
        retry_on=(ConnectionError, "TimeoutError", "json.JSONDecodeError"),
    )(jobs.succeed)
    sync(JobStore(), registry.values())
    assert ScheduledJob.objects.get(id="report").run_policy == {
        "retries": 3,
        "retry_on": ["builtins.ConnectionError", "builtins.TimeoutError", "json.decoder.JSONDecodeError"],
    }


def test_the_api_sets_retries_and_refuses_a_bad_entry_of_retry_on_by_its_field(
    registry: dict, admin_client: Client
) -> None:
    job(id="report", interval=60)(jobs.succeed)
    sync(JobStore(), registry.values())
    url = "/scheduling/api/jobs/report/reschedule/"
    body = {"retries": 2, "retry_backoff": 5, "retry_on": ["builtins.OSError"]}
    response = admin_client.post(url, body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert ScheduledJob.objects.get(id="report").run_policy == body
    response = admin_client.post(
        url, {"retry_on": ["OSError", "os.nothing"]}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "retry_on[1]"


def test_the_admin_form_sets_retries_and_shows_a_bad_retry_on_at_its_field(
    registry: dict, admin_client: Client
) -> None:
    job(id="report", interval=60)(jobs.succeed)
    sync(JobStore(), registry.values())
    url = reverse("admin:scheduling_job_change", args=["report"])
    form = admin_client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data |= {"retries": 2, "retry_backoff": 10, "retry_backoff_max": 60, "retry_on": "ConnectionError"}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ScheduledJob.objects.get(id="report").run_policy == {
        "retries": 2,
        "retry_backoff": 10,
        "retry_backoff_max": 60,
        "retry_on": ["builtins.ConnectionError"],
    }
    response = admin_client.post(url, data | {"retry_on": "ConnectionError, nope.Nothing"})
    assert response.status_code == 200
    assert "nope.Nothing" in str(response.context["adminform"].form.errors["retry_on"])


# Dispatch: each attempt its own row, in every placement


def declare(registry: dict, path: Path, failures: int, **options: Any) -> JobStore:
    options.setdefault("retries", 2)
    options.setdefault("retry_backoff", 0)
    job(id="flaky", interval=3600, args=[str(path), failures], **options)(jobs.fail_until)
    store = JobStore()
    sync(store, registry.values())
    return store


def fire(store: JobStore, dispatcher: Dispatcher) -> datetime:
    later = timezone.now() + timedelta(hours=1, seconds=1)
    due, _ = store.get_due_jobs_and_next_run_time(later, 10)
    dispatcher.dispatch(due, later)
    return later


def attempts(status: str | None = None) -> list[tuple[int, str, int, bool]]:
    rows = Execution.objects.filter(job_id="flaky").order_by("attempt")
    if status is not None and not rows.filter(status=status).exists():
        return []
    return [(row.attempt, row.status, row.attempts, row.retry_at is not None) for row in rows]


def retry_until_done(dispatcher: Dispatcher, drain: Any = None) -> list[tuple[int, str, int, bool]]:
    """Take each retry as it falls due until a run succeeds (or attempts run out)."""
    for _ in range(5):
        if drain is not None:
            drain()
        wait_for(lambda: not Execution.objects.filter(job_id="flaky").unfinished().exists())
        if not Execution.objects.awaiting_retry().exists():
            break
        dispatcher.run_retries(timezone.now() + timedelta(hours=2))
    return attempts()


def test_a_failed_run_is_retried_in_threads_each_attempt_its_own_row_of_the_same_fire(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=2)
    dispatcher.store = store
    fire(store, dispatcher)
    assert retry_until_done(dispatcher) == [
        (1, "failed", 3, False),
        (2, "failed", 3, False),
        (3, "succeeded", 3, False),
    ]
    assert Execution.objects.filter(job_id="flaky").values("scheduled_at").distinct().count() == 1
    assert len((tmp_path / "calls").read_text().splitlines()) == 3


def test_retries_stop_after_the_last_attempt(registry: dict, dispatcher: Dispatcher, tmp_path: Path) -> None:
    store = declare(registry, tmp_path / "calls", failures=9, retries=1)
    dispatcher.store = store
    fire(store, dispatcher)
    assert retry_until_done(dispatcher) == [(1, "failed", 2, False), (2, "failed", 2, False)]


def test_retry_on_limits_which_failures_retry(registry: dict, dispatcher: Dispatcher, tmp_path: Path) -> None:
    store = declare(registry, tmp_path / "other", failures=9, retry_on=[TimeoutError])
    dispatcher.store = store
    fire(store, dispatcher)
    assert retry_until_done(dispatcher) == [(1, "failed", 3, False)]  # a ConnectionError: not retried


def test_a_failed_run_is_retried_in_the_process_pool(registry: dict, tmp_path: Path) -> None:
    store = declare(registry, tmp_path / "calls", failures=1, runs_in="processes")
    recorder, processes = Recorder(), ProcessPool(1)
    threads = ThreadTarget(recorder, max_workers=1)
    dispatcher = Dispatcher(store, recorder, run_targets(threads, processes))
    try:
        fire(store, dispatcher)
        done = retry_until_done(dispatcher)
    finally:
        threads.shutdown()
        processes.shutdown()
    assert done == [(1, "failed", 3, False), (2, "succeeded", 3, False)]
    assert Execution.objects.filter(ran_in="processes").count() == 2
    pids = set((tmp_path / "calls").read_text().split())
    assert str(os.getpid()) not in pids  # each attempt ran in a child


def test_a_failed_run_in_a_task_worker_is_retried_the_worker_writing_its_retry(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=1, runs_in="tasks")
    dispatcher.store = store
    fire(store, dispatcher)
    assert attempts() == [(1, "enqueued", 3, False)]
    work_off()
    assert attempts() == [(1, "failed", 3, True)]  # the worker wrote the outcome and the retry
    assert retry_until_done(dispatcher, drain=work_off) == [
        (1, "failed", 3, False),
        (2, "succeeded", 3, False),
    ]


def test_a_retry_of_a_scheduled_fire_runs_however_late_it_is_after_the_misfire_grace_time(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=1, misfire_grace_time=30)
    dispatcher.store = store
    later = fire(store, dispatcher)
    wait_for(lambda: attempts("failed"))
    Execution.objects.filter(job_id="flaky").update(scheduled_at=later - timedelta(hours=5))
    assert retry_until_done(dispatcher) == [(1, "failed", 3, False), (2, "succeeded", 3, False)]


# max_instances and the next fire


def pending_retry(job_id: str = "flaky", attempts: int = 3, **fields: Any) -> Execution:
    now = timezone.now()
    return Execution.objects.create(
        job_id=job_id,
        status=fields.pop("status", "failed"),
        scheduled_at=fields.pop("scheduled_at", now - timedelta(minutes=1)),
        finished_at=now,
        attempts=attempts,
        retry_at=fields.pop("retry_at", now),
        **fields,
    )


def test_a_retry_pending_when_the_next_fire_comes_counts_like_a_running_run(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    pending_retry(retry_at=timezone.now() + timedelta(hours=5))
    fire(store, dispatcher)
    skipped = Execution.objects.get(job_id="flaky", status="skipped")
    assert skipped.exception == RETRY_PENDING


def test_a_due_retry_waits_while_max_instances_runs_are_going(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    flaky = store.lookup_job("flaky")
    threads = dispatcher.targets[next(iter(dispatcher.targets))]
    assert threads.reserve(flaky, 1) == 1  # its one slot, taken by a run going on
    failed_run = pending_retry()
    dispatcher.run_retries(timezone.now())
    assert Execution.objects.filter(job_id="flaky").count() == 1
    assert Execution.objects.get(pk=failed_run.pk).retry_at is not None  # still pending
    threads.release(flaky)
    dispatcher.run_retries(timezone.now())
    wait_for(lambda: Execution.objects.filter(job_id="flaky", attempt=2, status="succeeded").exists())


# Taken once, under the lease, across restarts


def test_a_retry_is_taken_once_by_two_dispatchers_and_not_at_all_by_a_lost_lease(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    stale = Recorder()
    stale.fence = Fence(uuid.uuid4(), 7)
    other = Dispatcher(JobStore(), stale, run_targets(ThreadTarget(stale, max_workers=1)))
    failed_run = pending_retry()
    with pytest.raises(FenceLost):
        other.run_retries(timezone.now())
    assert Execution.objects.filter(job_id="flaky").count() == 1
    dispatcher.run_retries(timezone.now())
    dispatcher.run_retries(timezone.now())
    wait_for(lambda: Execution.objects.filter(job_id="flaky", attempt=2, status="succeeded").exists())
    assert Execution.objects.filter(job_id="flaky").count() == 2
    assert Execution.objects.get(pk=failed_run.pk).retry_at is None


def test_a_retry_recorded_but_not_taken_before_a_crash_is_only_taken_by_the_next_leader(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    failed_run = pending_retry()
    # The crashed leader recorded attempt 2 (it ran, or not), and died before taking the retry.
    Execution.objects.create(
        job_id="flaky", status="interrupted", scheduled_at=failed_run.scheduled_at, attempt=2, attempts=3
    )
    dispatcher.run_retries(timezone.now())
    assert Execution.objects.filter(job_id="flaky").count() == 2
    assert not Execution.objects.awaiting_retry().exists()
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize("broken", ["take_retry", "policies_of"])
def test_a_database_error_while_starting_a_retry_gives_its_slot_back_and_records_no_attempt(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    failed_run = pending_retry()

    def fail(*args: Any) -> Any:
        raise OperationalError("the database went away")

    if broken == "take_retry":
        monkeypatch.setattr(ExecutionQuerySet, "take_retry", fail)
    else:
        monkeypatch.setattr(dispatch, "policies_of", fail)
    with pytest.raises(OperationalError):
        dispatcher.run_retries(timezone.now())
    threads = dispatcher.targets[next(iter(dispatcher.targets))]
    assert isinstance(threads, ThreadTarget)
    assert threads.reserved == {}
    assert attempts() == [(1, "failed", 3, True)]  # no attempt row left "running", still pending
    monkeypatch.undo()
    dispatcher.run_retries(timezone.now())  # the loop, backed off, tries again
    wait_for(lambda: Execution.objects.filter(job_id="flaky", attempt=2, status="succeeded").exists())
    assert Execution.objects.get(pk=failed_run.pk).retry_at is None


def test_a_retry_taken_by_another_scheduler_meanwhile_leaves_no_attempt_row(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    pending_retry()
    monkeypatch.setattr(ExecutionQuerySet, "take_retry", lambda runs: 0)  # the lease was lost
    dispatcher.run_retries(timezone.now())
    assert Execution.objects.filter(job_id="flaky").count() == 1
    assert not (tmp_path / "calls").exists()


def test_a_pending_retry_survives_a_restart_and_the_new_scheduler_runs_it(
    registry: dict, tmp_path: Path
) -> None:
    declare(registry, tmp_path / "calls", failures=0)
    failed_run = pending_retry(origin="manual", requested_by="alice")
    runner = Runner(threads=2)
    runner.start()
    try:
        retried = wait_for(
            lambda: Execution.objects.filter(job_id="flaky", attempt=2, status="succeeded").first()
        )
    finally:
        runner.stop(timeout=5)
    assert (retried.scheduled_at, retried.attempts, retried.origin, retried.requested_by) == (
        failed_run.scheduled_at,
        3,
        "manual",
        "alice",
    )


def test_the_loop_wakes_for_a_retry_read_in_the_statements_it_runs_anyway(
    registry: dict, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    soon = timezone.now() + timedelta(seconds=30)
    pending_retry(retry_at=soon)
    with CaptureQueriesContext(connection) as queries:
        assert store.get_next_run_time() == soon
        store.get_due_jobs_and_next_run_time(timezone.now(), 10)
    assert len(queries) == 2
    assert store.next_retry == soon
    control.delete("flaky")  # no job left: the retry is still found, at one more query
    assert JobStore().get_next_run_time() == soon


def test_a_retry_of_a_job_that_left_the_store_is_not_retried_and_says_why(
    registry: dict, dispatcher: Dispatcher
) -> None:
    failed_run = pending_retry(job_id="gone", exception="builtins.ConnectionError: boom")
    dispatcher.run_retries(timezone.now())
    failed_run.refresh_from_db()
    assert failed_run.retry_at is None
    assert failed_run.exception.endswith("Not retried: the job is no longer in the store")


def test_a_retry_due_during_a_maintenance_pause_is_recorded_skipped(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    pending_retry()
    control.start_maintenance("DB migration", "alice")
    dispatcher.run_retries(timezone.now())
    skipped = Execution.objects.get(job_id="flaky", attempt=2)
    assert skipped.status == "skipped"
    assert "DB migration" in skipped.exception
    assert not Execution.objects.awaiting_retry().exists()


def test_a_retry_in_task_workers_waits_for_a_worker_from_when_it_was_enqueued_not_from_its_fire(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0, runs_in="tasks")
    dispatcher.store = store
    two_hours_ago = timezone.now() - timedelta(hours=2)  # past SCHEDULING_TASK_TIMEOUT's hour
    pending_retry(scheduled_at=two_hours_ago, ran_in="tasks")
    dispatcher.run_retries(timezone.now())
    assert expire_task_runs() == 0
    assert attempts() == [(1, "failed", 3, False), (2, "enqueued", 3, False)]
    # A row enqueued before enqueued_at was recorded still counts from its fire time.
    Execution.objects.filter(job_id="flaky", attempt=2).update(enqueued_at=None)
    assert expire_task_runs() == 1
    assert attempts()[1][1] == "interrupted"


def test_a_queued_fire_in_task_workers_waits_for_a_worker_from_when_it_started_waiting(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0, runs_in="tasks", overlap="queue")
    dispatcher.store = store
    two_hours_ago = timezone.now() - timedelta(hours=2)
    pending_retry(
        status="queued", ran_in="tasks", queued=True, scheduled_at=two_hours_ago, retry_at=two_hours_ago
    )
    dispatcher.run_retries(timezone.now())
    assert Execution.objects.get(job_id="flaky").status == "enqueued"
    assert expire_task_runs() == 0


# What people see


def test_the_admin_and_the_api_show_the_attempt_and_the_next_attempts_time(admin_client: Client) -> None:
    failed_run = pending_retry(job_id="report", attempts=4, retry_at=timezone.now() + timedelta(minutes=5))
    page = admin_client.get(reverse("admin:scheduling_execution_change", args=[failed_run.pk])).text
    assert "attempt 1 of 4" in page
    assert "next attempt at" in page
    listing = admin_client.get(reverse("admin:scheduling_execution_changelist")).text
    assert "attempt 1 of 4" in listing
    runs = admin_client.get("/scheduling/api/runs/?job=report").json()["runs"]
    assert (runs[0]["attempt"], runs[0]["attempts"]) == (1, 4)
    assert failed_run.retry_at is not None
    assert runs[0]["next_attempt_at"] == failed_run.retry_at.isoformat()


def test_pruning_keeps_a_failed_run_whose_retry_is_pending() -> None:
    long_ago = timezone.now() - timedelta(days=400)
    waiting = pending_retry(job_id="report", scheduled_at=long_ago)
    done = pending_retry(job_id="report", scheduled_at=long_ago - timedelta(days=1), retry_at=None)
    assert prune(timedelta(days=30)) == 1
    assert list(Execution.objects.values_list("pk", flat=True)) == [waiting.pk]
    assert done.pk != waiting.pk


def test_a_run_requested_now_holds_to_max_instances_with_a_retry_pending_and_may_be_retried(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=1)
    dispatcher.store = store
    flaky = store.lookup_job("flaky")
    manual = Origin(Execution.Origin.MANUAL, "alice")
    policy = RunPolicy(retries=2)
    dispatcher.run_requested(flaky, timezone.now(), manual, lambda: True, policy=policy, waiting=1)
    assert Execution.objects.get(job_id="flaky").status == "skipped"  # its one slot is the retry's

    Execution.objects.all().delete()
    dispatcher.run_requested(flaky, timezone.now(), manual, lambda: True, policy=policy)
    assert retry_until_done(dispatcher) == [(1, "failed", 3, False), (2, "succeeded", 3, False)]
    assert set(Execution.objects.values_list("origin", "requested_by")) == {("manual", "alice")}


def test_run_now_holds_to_max_instances_with_a_retry_pending_after_retries_were_set_to_0(
    registry: dict,
) -> None:
    job(id="flaky", interval=3600)(jobs.succeed)  # no retries (any more)
    pending_retry(retry_at=timezone.now() + timedelta(hours=5))
    runner = Runner()
    runner.start()
    try:
        control.run_now("flaky", requested_by="alice")
        asked = wait_for(lambda: Execution.objects.filter(requested_by="alice").first())
    finally:
        runner.stop()
    assert (asked.status, asked.exception) == (
        "skipped",
        "Skipped: the job was already running (max_instances reached)",
    )


def test_the_policy_read_of_a_failure_is_retried_with_its_write_when_the_connection_broke(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Execution.objects.create(
        job_id="report", status="running", scheduled_at=timezone.now(), attempts=2, started_at=timezone.now()
    )
    real, calls = writer.retry_times, []

    def broken_once(finished: Any) -> dict[int, datetime]:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("the connection is closed")
        return real(finished)

    monkeypatch.setattr(writer, "retry_times", broken_once)
    assert writer.finish_all([(run, failed())]) == 1
    run.refresh_from_db()
    assert (run.status, run.retry_at is not None, len(calls)) == ("failed", True, 2)


def test_a_run_that_fails_after_a_cancel_was_asked_for_is_written_cancelled_and_not_retried() -> None:
    ScheduledJob.objects.create(id="report", source="code", run_policy={"retries": 2, "retry_backoff": 10})
    started = {"job_id": "report", "status": "running", "attempts": 3, "started_at": timezone.now()}
    cancelled = Execution.objects.create(
        scheduled_at=NOW, cancel_requested_at=timezone.now(), cancel_requested_by="alice", **started
    )
    other = Execution.objects.create(scheduled_at=NOW + timedelta(minutes=1), **started)
    finished = [(cancelled, failed()), (other, failed())]
    with CaptureQueriesContext(connection) as queries:
        assert writer.finish_all(finished) == 2
    assert len(queries) == 2  # the policies' read and the one UPDATE, as without a cancel
    rows = Execution.objects.order_by("scheduled_at").values_list("status", "retry_at")
    assert [(status, retry_at is not None) for status, retry_at in rows] == [
        ("cancelled", False),
        ("failed", True),
    ]


def test_a_change_of_retries_is_in_the_schedules_words_for_the_history_of_changes(registry: dict) -> None:
    job(id="report", interval=60)(jobs.succeed)
    sync(JobStore(), registry.values())
    before = schedule_summary("report")
    control.change("report", retries=3, retry_on=["ConnectionError"])
    assert (
        schedule_summary("report")
        == before + ", retries 3 (backoff 30 s, at most 3600 s, on builtins.ConnectionError)"
    )


def test_a_retry_of_a_paused_job_is_not_run_and_says_why(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    store = declare(registry, tmp_path / "calls", failures=0)
    dispatcher.store = store
    failed_run = pending_retry()
    control.pause("flaky")
    dispatcher.run_retries(timezone.now())
    failed_run.refresh_from_db()
    assert failed_run.retry_at is None
    assert failed_run.exception.endswith("Not retried: the job was paused")
    assert Execution.objects.filter(job_id="flaky").count() == 1
