"""Fire-ahead: fires due within a short window are claimed (recorded, fenced) before their time
and their runs held until it (SCHEDULING_FIRE_AHEAD).

Between the claim and the start a row is "running" with no start (``started_at`` empty); a run
never starts before its scheduled time; one held when its scheduler crashes is recovered as
interrupted like any unfinished row; one held when its scheduler loses the lease never starts
and is recorded interrupted; a stopping scheduler starts the held runs due within its shutdown
timeout at their time, and records the others interrupted, never started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.models import F
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job
from scheduling.history.housekeeping import recover_interrupted
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Outcome
from scheduling.history.writer import OutcomeWriter
from scheduling.models import Execution, Lease, Maintenance, SchedulerInstance
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import NOT_STARTED_LEASE, ThreadTarget
from scheduling.runtime import loop as loop_module
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.loop import Scheduler
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def due_in(registry: dict, seconds: float, **declared: Any) -> tuple[JobStore, datetime]:
    """The declared jobs, each moved to fire ``seconds`` from now; returns the store and that fire."""
    store = JobStore()
    sync(store, registry.values())
    fire = datetime.now(UTC) + timedelta(seconds=seconds)
    stored = store.get_all_jobs()
    for due in stored:
        due.next_run_time = fire
    store.update_jobs(stored)
    return store, fire


def claim_ahead(store: JobStore, target: ThreadTarget, window: float) -> Dispatcher:
    """One pass of the loop claiming what is due within ``window`` seconds from now."""
    now = datetime.now(UTC)
    horizon = now + timedelta(seconds=window)
    due, _ = store.get_due_jobs_and_next_run_time(horizon, 1000)
    dispatcher = Dispatcher(store, target.recorder, run_targets(target))
    dispatcher.dispatch(due, now, horizon)
    return dispatcher


def starts(notes: Path) -> list[tuple[float, float]]:
    """(start, scheduled) of each run noted by jobs.note_start."""
    if not notes.exists():
        return []
    return [(float(a), float(b)) for a, b in (line.split() for line in notes.read_text().splitlines())]


def test_a_run_claimed_ahead_is_recorded_without_a_start_and_never_starts_before_its_time(
    registry: dict, executor: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=30, id="soon", args=[str(notes)])(jobs.note_start)
    store, fire = due_in(registry, 0.5)

    claim_ahead(store, executor, window=2)

    row = Execution.objects.get(job_id="soon")
    # Claimed, not started: running, no start, and the job moved on to its next fire (fenced writes).
    assert (row.status, row.started_at, row.scheduled_at) == ("running", None, fire)
    assert DjangoJob.objects.get(id="soon").next_run_time == fire + timedelta(seconds=30)
    assert executor.reserved == {"soon": 1}, "a held run holds its max_instances slot"
    wait_for(lambda: starts(notes), timeout=5)
    assert executor.wait(5)
    [(started, scheduled)] = starts(notes)
    assert scheduled == fire.timestamp()
    assert started >= scheduled, "the run's code began before its scheduled time"
    row.refresh_from_db()
    assert row.status == "succeeded"
    # Lateness is measured from the scheduled time, at the real start.
    assert row.started_at is not None
    assert timedelta(0) <= row.started_at - row.scheduled_at < timedelta(seconds=1)


def test_the_misfire_rule_judges_a_held_run_at_its_real_start(registry: dict, tmp_path: Path) -> None:
    gate, notes = tmp_path / "gate", tmp_path / "starts"
    job(interval=30, id="blocker", args=[str(gate)])(jobs.wait_for_file)
    job(interval=30, id="late", args=[str(notes)], misfire_grace_time=1)(jobs.note_start)
    store, fire = due_in(registry, 0.3)
    pool = ThreadTarget(Recorder(), max_workers=1)  # the blocker takes the only thread
    try:
        claim_ahead(store, pool, window=2)
        # Held until its time, then queued behind the blocker past its grace time.
        wait_for(lambda: datetime.now(UTC) > fire + timedelta(seconds=1.5), timeout=5)
        gate.write_text("go")
        assert pool.wait(10)
    finally:
        pool.shutdown()

    late = Execution.objects.get(job_id="late")
    assert late.status == "missed"
    assert "after its misfire grace time of 1 s" in late.exception
    assert starts(notes) == []


def test_a_run_held_when_its_scheduler_dies_is_recovered_as_interrupted(
    registry: dict, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=60, id="later", args=[str(notes)])(jobs.note_start)
    store, _ = due_in(registry, 30)
    instance = SchedulerInstance.objects.create(hostname="elsewhere", pid=1)
    pool = ThreadTarget(Recorder(instance), max_workers=1)
    claim_ahead(store, pool, window=60)
    assert Execution.objects.get(job_id="later").started_at is None

    pool.holding.stop()  # the process dies: nothing of it goes on
    pool.shutdown()
    SchedulerInstance.objects.filter(pk=instance.pk).update(last_beat=timezone.now() - timedelta(hours=1))

    assert recover_interrupted() == 1
    row = Execution.objects.get(job_id="later")
    assert (row.status, row.started_at) == ("interrupted", None)
    assert row.finished_at is not None
    assert starts(notes) == []


def test_a_run_held_when_the_lease_is_no_longer_held_at_its_time_is_not_started(
    registry: dict, executor: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=30, id="soon", args=[str(notes)])(jobs.note_start)
    store, fire = due_in(registry, 0.3)
    executor.holding.may_start = lambda: False  # the lease ran out, by this process's clock

    claim_ahead(store, executor, window=2)

    row = wait_for(lambda: Execution.objects.filter(job_id="soon", status="interrupted").first(), timeout=5)
    assert row.exception == NOT_STARTED_LEASE
    assert row.started_at is None
    assert executor.reserved == {}, "the slot of a run that will not start is given back"
    wait_for(lambda: datetime.now(UTC) > fire + timedelta(seconds=0.3), timeout=5)
    assert starts(notes) == []


def test_the_start_of_a_long_run_is_written_soon_after_it_and_a_short_one_with_its_outcome() -> None:
    writer = OutcomeWriter()
    now = timezone.now()
    long, short = (
        Execution.objects.create(job_id=name, status="running", scheduled_at=now, started_at=None)
        for name in ("long", "short")
    )
    try:
        for row in (long, short):
            row.started_at = timezone.now()
            Recorder(outcomes=writer).started(row)
        writer.finish(short, Outcome("succeeded", short.started_at, timezone.now(), 0.0), wait=True)
        wait_for(
            lambda: Execution.objects.filter(job_id="long", started_at__isnull=False).exists(), timeout=5
        )
    finally:
        writer.stop()
    assert Execution.objects.get(job_id="long").started_at == long.started_at
    assert Execution.objects.get(job_id="short").started_at == short.started_at


@pytest.fixture
def runner(registry: dict, settings: Any) -> Iterator[Runner]:
    settings.SCHEDULING_FIRE_AHEAD = 2.0
    settings.SCHEDULING_LEASE_RENEW_INTERVAL = 0.2
    settings.SCHEDULING_POLL_INTERVAL = 0.2
    runner = Runner(threads=2)
    yield runner
    if runner.scheduler is not None and runner.scheduler.running:
        runner.stop(timeout=5)


def held_row(job_id: str) -> Execution:
    return wait_for(
        lambda: Execution.objects.filter(job_id=job_id, status="running", started_at__isnull=True).first(),
        timeout=10,
    )


def test_a_scheduler_that_loses_its_lease_in_the_window_starts_none_of_its_held_runs(
    runner: Runner, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=4, id="tick", args=[str(notes)])(jobs.note_start)
    runner.start()
    held = held_row("tick")

    # Another scheduler takes the lease over: this one's next renewal fails and it steps down.
    Lease.objects.update(
        holder=uuid.uuid4(), epoch=F("epoch") + 1, expires_at=timezone.now() + timedelta(minutes=5)
    )

    row = wait_for(lambda: Execution.objects.filter(pk=held.pk, status="interrupted").first(), timeout=5)
    assert "stepped down" in row.exception
    assert row.started_at is None
    assert not runner.active
    wait_for(lambda: datetime.now(UTC) > held.scheduled_at + timedelta(seconds=0.5), timeout=10)
    assert starts(notes) == []


def test_a_scheduler_stopping_starts_its_held_runs_at_their_time_within_its_shutdown_timeout(
    runner: Runner, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=4, id="tick", args=[str(notes)])(jobs.note_start)
    runner.start()
    held = held_row("tick")

    assert runner.stop(timeout=10) == 0

    row = Execution.objects.get(pk=held.pk)
    assert row.status == "succeeded"
    [(started, scheduled)] = starts(notes)
    assert started >= scheduled == held.scheduled_at.timestamp()


def test_a_scheduler_stopping_starts_none_of_the_runs_held_beyond_its_shutdown_timeout(
    runner: Runner, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=4, id="tick", args=[str(notes)])(jobs.note_start)
    runner.start()
    held = held_row("tick")
    assert held.scheduled_at > timezone.now() + timedelta(seconds=0.5), "claimed 2 s ahead"

    assert runner.stop(timeout=0.1) == 1

    row = Execution.objects.get(pk=held.pk)
    assert (row.status, row.started_at) == ("interrupted", None)
    assert row.exception == "Interrupted: the scheduler stopped before the run could start"
    wait_for(lambda: datetime.now(UTC) > held.scheduled_at + timedelta(seconds=0.5), timeout=10)
    assert starts(notes) == []


def test_a_cron_fire_claimed_ahead_moves_the_job_to_the_fire_after_it(
    registry: dict, executor: ThreadTarget
) -> None:
    job(cron="* * * * *", id="minutely")(jobs.succeed)
    store, fire = due_in(registry, 0.3)
    store_job = store.lookup_job("minutely")
    assert store_job is not None
    fire = store_job.trigger.get_next_fire_time(None, datetime.now(UTC))
    store_job.next_run_time = fire
    store.update_jobs([store_job])

    claim_ahead(store, executor, window=(fire - datetime.now(UTC)).total_seconds() + 1)

    assert Execution.objects.get(job_id="minutely").scheduled_at == fire
    assert DjangoJob.objects.get(id="minutely").next_run_time == fire + timedelta(minutes=1)
    executor.holding.stop()


def test_jobs_in_task_workers_are_not_claimed_ahead(registry: dict, executor: ThreadTarget) -> None:
    job(interval=30, id="remote", runs_in="tasks")(jobs.succeed)
    store, fire = due_in(registry, 5)

    dispatcher = claim_ahead(store, executor, window=10)

    assert not Execution.objects.exists()
    assert dispatcher.left == fire, "looked at again at its time"
    assert DjangoJob.objects.get(id="remote").next_run_time == fire


def test_a_fire_in_the_window_of_a_maintenance_pause_is_left_to_its_time_to_be_recorded_skipped(
    registry: dict, executor: ThreadTarget
) -> None:
    job(interval=30, id="paused")(jobs.succeed)
    store, fire = due_in(registry, 5)
    Maintenance.objects.create(on=True, reason="migration", by="alice", since=timezone.now())

    dispatcher = claim_ahead(store, executor, window=10)

    assert not Execution.objects.exists(), "nothing claimed ahead during a pause"
    assert dispatcher.left == fire, "looked at again at its time"


def test_a_scheduler_whose_changes_are_pushed_records_each_fire_of_a_maintenance_pause_skipped(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on PostgreSQL with LISTEN: the loop does not poll, so only the wake-ups it plans itself
    # bring it back for the fires it leaves to their time.
    monkeypatch.setattr(runner, "_pushed", lambda: True)
    job(interval=1, id="every_second")(jobs.succeed)
    Maintenance.objects.create(on=True, reason="migration", by="alice", since=timezone.now())
    runner.start()

    skipped = Execution.objects.filter(job_id="every_second", status="skipped")
    wait_for(lambda: skipped.count() >= 3, timeout=10)
    assert not Execution.objects.exclude(status="skipped").exists()


def test_the_window_is_widest_until_a_claim_is_measured_then_follows_the_time_claims_take() -> None:
    loop = Scheduler(poll_interval=0.5, fire_ahead=0.25)
    assert loop.lead() == timedelta(seconds=1), "four times the setting before any claim"

    loop._measure_claim(time.monotonic() - 0.3, more=False)
    assert timedelta(seconds=0.42) <= loop.lead() <= timedelta(seconds=0.5)
    # A claim in several passes (more were due than one takes) counts whole.
    loop._measure_claim(time.monotonic() - 0.1, more=True)
    loop._measure_claim(time.monotonic() - 0.1, more=False)
    assert timedelta(seconds=0.32) <= loop.lead() <= timedelta(seconds=0.4)
    loop._measure_claim(time.monotonic() - 0.01, more=False)
    assert loop.lead() == timedelta(seconds=0.25), "never narrower than the setting"
    loop._measure_claim(time.monotonic() - 5, more=False)
    assert loop.lead() == timedelta(seconds=1), "never wider than four times the setting"

    assert Scheduler(poll_interval=0.5, fire_ahead=0).lead() == timedelta(0)


def test_a_claim_larger_than_a_pass_goes_on_at_once_and_keeps_its_window(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-measured after its first pass, the window would narrow: the rest of the claim would wait
    for it, then crowd the instant at which the first runs claimed start."""
    monkeypatch.setattr(loop_module, "DISPATCH_BATCH", 2)
    for number in range(5):
        job(interval=3600, id=f"burst-{number}")(jobs.succeed)
    store, fire = due_in(registry, 0.9)
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    loop = Scheduler(poll_interval=0.5, fire_ahead=0.25, dispatcher=dispatcher, timezone=UTC)

    passes = []
    for _ in range(3):
        wake = loop._dispatch_due(dispatcher)
        passes.append((wake, datetime.now(UTC)))

    assert all(wake <= after for wake, after in passes[:2]), "a full pass is followed at once"
    claimed = Execution.objects.filter(job_id__startswith="burst-")
    assert claimed.count() == 5
    assert datetime.now(UTC) < fire, "all claimed ahead of their time"
    assert set(claimed.values_list("started_at", flat=True)) == {None}
    wait_for(lambda: claimed.filter(status="succeeded").count() == 5, timeout=5)


def burst_loop(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch, count: int, seconds: float
) -> tuple[Scheduler, Dispatcher, datetime]:
    """``count`` jobs due together ``seconds`` from now, two a pass, and a loop whose full passes
    took half a second each."""
    monkeypatch.setattr(loop_module, "DISPATCH_BATCH", 2)
    for number in range(count):
        job(interval=3600, id=f"burst-{number}")(jobs.succeed)
    store, fire = due_in(registry, seconds)
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    loop = Scheduler(poll_interval=0.5, fire_ahead=0.25, dispatcher=dispatcher, timezone=UTC)
    loop._pass_took = 0.5
    return loop, dispatcher, fire


@pytest.mark.parametrize(("count", "lead"), [(2, 1.0), (5, 2.0), (40, 10.0)])
def test_more_jobs_due_together_than_a_pass_claims_are_claimed_earlier_by_the_passes_they_take(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch, count: int, lead: float
) -> None:
    """10,000 jobs due at once took ten passes, of which a window of 1 s covered five: the rest
    were claimed while the first runs started, and came up to 2 s late."""
    loop, dispatcher, fire = burst_loop(registry, executor, monkeypatch, count, 30)

    wake = loop._dispatch_due(dispatcher)

    # One pass: the window (four times the setting until a claim is measured); three passes: two
    # more of half a second; twenty: at most 40 times the setting.
    assert wake == fire - timedelta(seconds=lead)
    assert not Execution.objects.exists()


def test_a_wake_up_before_the_one_planned_for_a_wide_claim_claims_only_its_window(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A notification (the store's rows changed) brings the loop back before the wake-up planned
    # 2 s ahead of the fire: what it claims then is the window's, not an hour's fires early.
    loop, dispatcher, _ = burst_loop(registry, executor, monkeypatch, 5, 30)
    planned = loop._dispatch_due(dispatcher)

    assert loop._dispatch_due(dispatcher) == planned
    assert not Execution.objects.exists()


def test_a_wide_claim_planned_takes_every_job_due_before_their_time(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, dispatcher, fire = burst_loop(registry, executor, monkeypatch, 5, 2.5)
    planned = loop._dispatch_due(dispatcher)
    assert planned == fire - timedelta(seconds=2)
    wait_for(lambda: datetime.now(UTC) >= planned, interval=0.01)

    while loop._dispatch_due(dispatcher) <= datetime.now(UTC):  # passes follow at once
        pass

    claimed = Execution.objects.filter(job_id__startswith="burst-")
    assert datetime.now(UTC) < fire, "all claimed ahead of their time"
    assert claimed.count() == 5
    assert set(claimed.values_list("started_at", flat=True)) == {None}
    assert set(claimed.values_list("scheduled_at", flat=True)) == {fire}
    wait_for(lambda: claimed.filter(status="succeeded").count() == 5, timeout=5)


def test_a_run_cancelled_while_held_never_starts_and_is_recorded_cancelled(
    registry: dict, executor: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "starts"
    job(interval=30, id="unwanted", args=[str(notes)])(jobs.note_start)
    store, fire = due_in(registry, 1.5)
    claim_ahead(store, executor, window=3)
    row = Execution.objects.get(job_id="unwanted")
    assert (row.status, row.started_at) == ("running", None)

    control.cancel(row.pk, by="alice")
    executor.check()  # the scheduler's next tick

    row.refresh_from_db()
    assert (row.status, row.started_at) == ("cancelled", None)
    assert row.exception == "Cancelled by alice before it started"
    assert row.finished_at is not None
    assert executor.reserved == {}, "its max_instances slot is given back"
    wait_for(lambda: datetime.now(UTC) > fire + timedelta(seconds=0.5), timeout=5)
    assert starts(notes) == [], "the job's code never ran"
    assert executor.holding.count == 0


def test_a_held_run_cancelled_while_the_database_refuses_is_recorded_cancelled_once_it_takes_it(
    registry: dict, executor: ThreadTarget
) -> None:
    job(interval=30, id="unwanted")(jobs.succeed)
    store, _ = due_in(registry, 5)
    claim_ahead(store, executor, window=10)
    row = Execution.objects.get(job_id="unwanted")
    control.cancel(row.pk, by="alice")
    refused: list[str] = []

    def refuse_updates(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("UPDATE"):
            refused.append(sql)
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_updates):
        executor.check()  # the tick that sees the cancel: its write is refused
    assert refused
    row.refresh_from_db()
    assert (row.status, row.started_at) == ("running", None)
    assert executor.holding.count == 0, "dropped all the same: it never starts"

    executor.record_not_started()  # the next tick

    row.refresh_from_db()
    assert (row.status, row.started_at) == ("cancelled", None)
    assert row.exception == "Cancelled by alice before it started"
    assert executor.reserved == {}
