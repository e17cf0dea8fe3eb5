"""Batched dispatch and history: statements per run stay constant however many jobs fall due."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import job, signals
from scheduling import store as store_module
from scheduling.history import writer as writer_module
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Outcome
from scheduling.history.writer import OutcomeWriter, finish_all
from scheduling.models import Execution, ScheduledJob
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def declare_due(registry: dict, count: int) -> JobStore:
    for number in range(count):
        job(interval={"seconds": 30}, id=f"due-{number}")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    stored = store.get_all_jobs()
    for due in stored:
        due.next_run_time -= timedelta(seconds=31)
    store.update_jobs(stored)
    return store


def kinds(queries: CaptureQueriesContext) -> Counter[str]:
    """Statements by kind; transaction control (BEGIN, COMMIT…) under "transaction"."""
    found = Counter(query["sql"].split()[0].upper() for query in queries.captured_queries)
    data = Counter(
        {kind: found.pop(kind) for kind in ("SELECT", "INSERT", "UPDATE", "DELETE") if kind in found}
    )
    if found:
        data["transaction"] = sum(found.values())
    return data


@pytest.mark.parametrize("count", [1, 200])
def test_dispatching_takes_one_select_one_insert_and_one_update_however_many_jobs_are_due(
    registry: dict, executor: ThreadTarget, count: int
) -> None:
    store = declare_due(registry, count)
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = datetime.now(UTC)

    with CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
        next_run_time = dispatcher.dispatch(due, now)

    found = kinds(queries)
    if count == 1:  # 3 statements, and one UPDATE for its outcome: 4 in all
        assert found == {"SELECT": 1, "INSERT": 1, "UPDATE": 1}, queries.captured_queries
    else:  # SQLite's 999-parameter limit splits the INSERT in batches; bulk_create() adds a transaction
        assert (found["SELECT"], found["UPDATE"]) == (1, 1), queries.captured_queries
        rows_per_insert = 999 // len(Execution._meta.concrete_fields)  # one parameter per column
        assert 1 <= found["INSERT"] <= -(-count // rows_per_insert)
        assert found.total() <= count // 20
    assert executor.wait(10)
    assert Execution.objects.filter(status="succeeded").count() == count
    assert next_run_time is not None
    assert next_run_time > now
    assert DjangoJob.objects.filter(next_run_time__lte=now).count() == 0


def test_outcomes_of_many_runs_are_written_in_one_update() -> None:
    recorder = Recorder()
    now = timezone.now()
    rows = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(100)])
    outcomes = [(row, Outcome("succeeded", now, now, 0.01 * n)) for n, row in enumerate(rows)]

    with CaptureQueriesContext(connection) as queries:
        written = finish_all(outcomes)

    assert kinds(queries) == {"UPDATE": 1}
    assert written == 100
    assert Execution.objects.get(pk=rows[7].pk).duration == pytest.approx(0.07)


def test_an_outcome_after_interrupted_is_kept_beside_the_row_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    now = timezone.now()
    rows = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(3)])
    Execution.objects.filter(pk=rows[0].pk).update(status="interrupted", exception="Interrupted: test")
    failed = Outcome("failed", now, now + timedelta(seconds=2), 2.0, "ValueError: late", "Traceback …")
    outcomes = [(rows[0], failed), *((row, Outcome("succeeded", now, now, 0.1)) for row in rows[1:])]

    written = finish_all(outcomes)

    assert written == 2
    interrupted = Execution.objects.get(pk=rows[0].pk)
    assert interrupted.status == "interrupted"
    assert interrupted.exception == "Interrupted: test"
    assert interrupted.late_outcome is not None
    assert interrupted.late_outcome["status"] == "failed"
    assert interrupted.late_outcome["exception"] == "ValueError: late"
    assert interrupted.late_outcome["duration"] == 2.0
    assert Execution.objects.filter(late_outcome__isnull=False).count() == 1
    assert (
        f"Run {rows[0].pk} of job job-0 ended (failed) after it had been recorded interrupted" in caplog.text
    )


def test_a_duplicate_fire_in_a_batch_leaves_the_others_to_run() -> None:
    recorder = Recorder()
    now = timezone.now()
    recorder.start("taken", now)

    started = recorder.insert([recorder.running_row("taken", now), recorder.running_row("free", now)])

    assert [row.job_id for row in started] == ["free"]
    assert Execution.objects.filter(job_id="taken").count() == 1


def test_the_outcome_writer_batches_outcomes_from_many_threads_and_writes_all_before_it_stops() -> None:
    outcomes = OutcomeWriter()
    recorder = Recorder(outcomes=outcomes)
    now = timezone.now()
    rows = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(50)])

    threads = [
        threading.Thread(target=recorder.finish, args=(row, Outcome("succeeded", now, now, 0.1)))
        for row in rows
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes.stop()

    assert Execution.objects.filter(status="succeeded").count() == 50


def _writer_noting_batches(
    monkeypatch: pytest.MonkeyPatch, busy_interval: float
) -> tuple[OutcomeWriter, Recorder, list[list[int]]]:
    """An outcome writer with that busy interval, and the executions of each batch it writes."""
    batches: list[list[int]] = []
    monkeypatch.setattr(writer_module, "BUSY_INTERVAL", busy_interval)

    def noted(finished: list[tuple[Execution, Outcome]]) -> int:
        batches.append([execution.pk for execution, _ in finished])
        return finish_all(finished)

    monkeypatch.setattr(writer_module, "finish_all", noted)
    outcomes = OutcomeWriter()
    return outcomes, Recorder(outcomes=outcomes), batches


def test_while_runs_keep_ending_the_writer_gathers_them_and_an_awaited_outcome_is_not_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,000 runs starting in one second made 50 UPDATEs of a few rows when the writer wrote at
    # each wake-up, each taking the interpreter's lock from the threads starting the others.
    # A busy interval of 2 s: room to spare on a slow machine.
    outcomes, recorder, batches = _writer_noting_batches(monkeypatch, busy_interval=2.0)
    now = timezone.now()
    lone, *ending, awaited = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(5)])
    done = Outcome("succeeded", now, now, 0.1)
    try:
        recorder.finish(lone, done, wait=True)  # none written for a while: at once, alone
        for row in ending:  # a run ending every 10 ms: all within the busy interval
            recorder.finish(row, done)
            time.sleep(0.01)
        wait_for(lambda: len(batches) == 2)
        # A signal's receiver waits for its row: written at once, busy or not (held back, this
        # write would take the 2 s of the interval).
        before = time.monotonic()
        recorder.finish(awaited, done, wait=True)
        assert time.monotonic() - before < 1.0
    finally:
        outcomes.stop()

    assert batches == [[lone.pk], [row.pk for row in ending], [awaited.pk]]
    assert Execution.objects.filter(status="succeeded").count() == 5


def test_an_awaited_outcome_queued_while_the_writer_pauses_cuts_the_pause_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Deciding the pause on the batch's first outcome alone held an awaited one that came during
    # it for the rest of the interval: its signal's receiver, and the run's thread, waited with it.
    # A busy interval of 5 s: far beyond the bound below.
    outcomes, recorder, batches = _writer_noting_batches(monkeypatch, busy_interval=5.0)
    now = timezone.now()
    lone, ending, awaited = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(3)])
    done = Outcome("succeeded", now, now, 0.1)
    try:
        recorder.finish(lone, done, wait=True)
        recorder.finish(ending, done)  # the writer takes it, and pauses for the busy interval
        wait_for(lambda: outcomes._queue.empty())
        before = time.monotonic()
        recorder.finish(awaited, done, wait=True)
        assert time.monotonic() - before < 2.5
    finally:
        outcomes.stop()

    assert batches == [[lone.pk], [ending.pk, awaited.pk]]


def test_a_run_that_ends_after_the_writer_stopped_writes_its_own_outcome_and_is_not_left_waiting() -> None:
    # A run still going past the shutdown timeout ends once the writer's thread is gone: waiting
    # for that thread would hold the job's thread forever, and so the process's exit.
    outcomes = OutcomeWriter()
    recorder = Recorder(outcomes=outcomes)
    now = timezone.now()
    [row] = recorder.insert([recorder.running_row("late", now)])
    outcomes.stop()
    finisher = threading.Thread(target=recorder.finish, args=(row, Outcome("succeeded", now, now, 0.1), True))
    finisher.start()
    finisher.join(30)
    assert not finisher.is_alive()
    assert Execution.objects.get(pk=row.pk).status == "succeeded"


def test_a_signal_receiver_finds_the_outcome_on_disk(registry: dict, executor: ThreadTarget) -> None:
    outcomes = OutcomeWriter()
    executor.recorder = Recorder(outcomes=outcomes)
    store = declare_due(registry, 1)
    seen: list[str] = []

    def receiver(sender: str, execution: Execution, **kwargs: object) -> None:
        seen.append(Execution.objects.get(pk=execution.pk).status)

    signals.job_succeeded.connect(receiver)
    try:
        now = datetime.now(UTC)
        Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(
            store.get_due_jobs_and_next_run_time(now, 10)[0], now
        )
        assert executor.wait(10)
    finally:
        signals.job_succeeded.disconnect(receiver)
        outcomes.stop()

    assert seen == ["succeeded"]


@pytest.mark.parametrize("count", [10, 300])
def test_a_first_sync_writes_any_number_of_jobs_in_the_same_few_statements(
    registry: dict, count: int, django_assert_max_num_queries
) -> None:
    for number in range(count):
        job(cron="0 3 * * *", id=f"job-{number}")(jobs.succeed)

    # A few statements, plus one per batch where SQLite's 999-parameter limit splits the inserts.
    with django_assert_max_num_queries(8 + count // 50):
        sync(JobStore(), registry.values())

    assert DjangoJob.objects.count() == ScheduledJob.objects.count() == count
    with django_assert_max_num_queries(3):
        report = sync(JobStore(), registry.values())
    assert report.summary() == ""


def test_outcomes_without_a_start_or_duration_are_written_as_nulls() -> None:
    recorder = Recorder()
    now = timezone.now()
    rows = recorder.insert([recorder.running_row(f"job-{n}", now) for n in range(3)])

    finish_all([(row, Outcome("missed", None, now, None, "Missed: 90.0 s late")) for row in rows])

    assert list(
        Execution.objects.values_list("status", "started_at", "duration", "exception").distinct()
    ) == [("missed", None, None, "Missed: 90.0 s late")]


def test_runs_due_as_the_pool_stops_are_not_started_and_nothing_breaks(registry: dict) -> None:
    pool = ThreadTarget(Recorder(), max_workers=2)
    pool.shutdown()
    store = declare_due(registry, 3)
    now = datetime.now(UTC)

    Dispatcher(store, pool.recorder, run_targets(pool)).dispatch(
        store.get_due_jobs_and_next_run_time(now, 10)[0], now
    )

    assert Execution.objects.filter(status="running").count() == 3, "recorded, for Runner.stop to close"
    assert pool.reserved == {}, "no run counted as going"
    assert DjangoJob.objects.filter(next_run_time__lte=now).count() == 0


def test_due_jobs_this_store_wrote_are_reused_only_while_their_rows_hold_what_it_wrote(
    registry: dict,
) -> None:
    store = declare_due(registry, 2)
    now = datetime.now(UTC)
    first, _ = store.get_due_jobs_and_next_run_time(now, limit=10)
    for due in first:
        due.next_run_time -= timedelta(seconds=1)
    store.update_jobs(first)

    again, _ = store.get_due_jobs_and_next_run_time(now, limit=10)
    assert [id(job) for job in again] == [id(job) for job in first]  # not unpickled again

    # Changed by another process (the admin, a shell): loaded from the row.
    other = JobStore()
    changed = other.lookup_job("due-0")
    changed.max_instances = 5
    other.update_job(changed)
    # Moved on in memory by a dispatch whose write failed: the row still says when it is due.
    again[1].next_run_time += timedelta(seconds=600)

    loaded, _ = store.get_due_jobs_and_next_run_time(now, limit=10)
    assert [job.id for job in loaded] == ["due-0", "due-1"]
    assert loaded[0] is not again[0]
    assert loaded[0].max_instances == 5
    assert loaded[1] is not again[1]
    assert loaded[1].next_run_time == again[1].next_run_time - timedelta(seconds=600)


def test_recording_a_fire_that_has_a_row_already_returns_only_what_was_recorded() -> None:
    recorder = Recorder()
    now = timezone.now()
    recorder.start("taken", now)

    recorded = recorder.record_not_run("taken", [now, now + timedelta(seconds=1)], "missed", "Missed: test")

    assert [row.scheduled_at for row in recorded] == [now + timedelta(seconds=1)]
    assert Execution.objects.filter(job_id="taken").count() == 2


def test_a_store_keeps_the_jobs_it_wrote_last_and_no_more_and_dispatches_the_others_from_their_rows(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CACHED_JOBS", 3)
    store = declare_due(registry, 5)  # synced, then all five written again: the last three kept
    assert list(store._written) == ["due-2", "due-3", "due-4"]

    due, _ = store.get_due_jobs_and_next_run_time(datetime.now(UTC), limit=2)
    assert [job.id for job in due] == ["due-0", "due-1"], "loaded from their rows"
    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(due, datetime.now(UTC))

    assert Execution.objects.filter(job_id__in=["due-0", "due-1"]).count() == 2
    assert list(store._written) == ["due-4", "due-0", "due-1"]
    assert len(store._read) == 3
    assert DjangoJob.objects.get(id="due-0").next_run_time > timezone.now()
