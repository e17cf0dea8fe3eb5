"""Overlap policies: what a fire does when it finds max_instances runs of its job still going."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from scheduling import control, job
from scheduling.declarations import JobDeclarationError
from scheduling.history.recorder import Recorder
from scheduling.models import Execution
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import QUEUED_AHEAD, Dispatcher
from scheduling.store import JobStore, policies_of
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.test_tasks import make_due

pytestmark = pytest.mark.django_db(transaction=True)

Status = Execution.Status


@pytest.fixture
def threads() -> Iterator[ThreadTarget]:
    pool = ThreadTarget(Recorder(), max_workers=4)
    yield pool
    pool.shutdown()


@pytest.fixture
def dispatcher(threads: ThreadTarget) -> Iterator[Dispatcher]:
    pool = ProcessPool(1)
    yield Dispatcher(JobStore(), threads.recorder, run_targets(threads, pool))
    pool.shutdown(wait=False)


def fire(registry: dict, dispatcher: Dispatcher) -> None:
    """One fire of every declared job, due now."""
    sync(dispatcher.store, registry.values())
    dispatcher.dispatch(make_due(dispatcher.store, seconds=30.1), datetime.now(UTC))


def tick(dispatcher: Dispatcher, threads: ThreadTarget) -> None:
    """What the scheduler does at each poll: look at live runs, start what waits for a slot."""
    threads.live.check()
    dispatcher.run_retries(datetime.now(UTC))


def looked_at(threads: ThreadTarget) -> bool:
    """The scheduler's look at its live runs (cancel requests), without starting anything."""
    threads.live.check()
    return True


def idle(dispatcher: Dispatcher, threads: ThreadTarget) -> bool:
    """A poll, then whether no run of the scheduler is going on any more."""
    tick(dispatcher, threads)
    return threads.reserved == {}


def statuses(job_id: str) -> list[str]:
    return list(Execution.objects.filter(job_id=job_id).order_by("pk").values_list("status", flat=True))


def test_queue_runs_a_fire_once_the_run_going_ends_and_skips_the_fires_meanwhile(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="report", overlap="queue", misfire_grace_time=1, args=[str(notes)])(
        jobs.stop_when_cancelled
    )
    fire(registry, dispatcher)
    first = wait_for(lambda: Execution.objects.filter(job_id="report", status="running").first())
    fire(registry, dispatcher)
    fire(registry, dispatcher)
    assert statuses("report") == [Status.RUNNING, Status.QUEUED, Status.SKIPPED]
    skipped = Execution.objects.get(job_id="report", status=Status.SKIPPED)
    assert skipped.exception == QUEUED_AHEAD

    queued = Execution.objects.get(job_id="report", status=Status.QUEUED)

    def past_its_grace() -> bool:
        tick(dispatcher, threads)  # the slot is still taken: the queued fire waits
        return (datetime.now(UTC) - queued.scheduled_at).total_seconds() > 1.5

    wait_for(past_its_grace)
    assert Execution.objects.filter(pk=queued.pk, status=Status.QUEUED).exists()
    control.cancel(first.pk, "alice")  # the first run ends…

    def queued_started() -> bool:
        tick(dispatcher, threads)
        return Execution.objects.filter(job_id="report", queued=True, status=Status.RUNNING).exists()

    wait_for(queued_started, 20)  # …and the queued fire starts, however late (no misfire)
    first.refresh_from_db()
    queued = Execution.objects.get(job_id="report", queued=True)
    assert first.status == Status.CANCELLED
    assert queued.started_at is not None
    assert first.finished_at is not None
    assert queued.started_at >= first.finished_at
    control.cancel(queued.pk, "alice")
    wait_for(lambda: idle(dispatcher, threads), 20)
    assert statuses("report") == [Status.CANCELLED, Status.CANCELLED, Status.SKIPPED]


def test_replace_stops_the_oldest_run_in_the_process_pool_and_runs_the_new_fire(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="export", runs_in="processes", overlap="replace", args=[str(notes), 60])(
        jobs.note_and_sleep
    )
    fire(registry, dispatcher)
    old = wait_for(lambda: Execution.objects.filter(job_id="export", status="running").first())
    wait_for(notes.exists, 30)  # its code runs in the child
    fire(registry, dispatcher)

    def replaced() -> bool:
        tick(dispatcher, threads)
        return Execution.objects.filter(job_id="export", queued=True, status=Status.RUNNING).exists()

    wait_for(replaced, 30)
    old.refresh_from_db()
    assert old.status == Status.CANCELLED
    assert old.exception.startswith("Cancelled by overlap='replace' (the fire at ")
    assert old.exception.endswith(": its process was stopped")
    new = Execution.objects.get(job_id="export", queued=True)
    assert old.finished_at is not None
    assert new.started_at is not None
    assert new.started_at >= old.finished_at  # never two at once: max_instances holds
    control.cancel(new.pk, "test")
    wait_for(lambda: idle(dispatcher, threads), 30)


def test_replace_asks_the_oldest_started_run_to_stop_never_one_claimed_ahead_and_not_started(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget
) -> None:
    job(interval=30, id="export", max_instances=2, overlap="replace", runs_in="processes")(jobs.succeed)
    sync(dispatcher.store, registry.values())
    stored = dispatcher.store.lookup_job("export")
    assert stored is not None
    assert threads.reserve(stored) == 1
    assert threads.reserve(stored) == 1, "both slots busy"
    now = timezone.now()
    started = Execution.objects.create(
        job_id="export", status=Status.RUNNING, scheduled_at=now - timedelta(seconds=10), started_at=now
    )
    held = Execution.objects.create(  # fire-ahead: claimed, waiting for its time
        job_id="export", status=Status.RUNNING, scheduled_at=now + timedelta(seconds=1), started_at=None
    )

    fire(registry, dispatcher)

    started.refresh_from_db()
    held.refresh_from_db()
    assert started.cancel_requested_by.startswith("overlap='replace'")
    assert held.cancel_requested_at is None
    assert Execution.objects.filter(job_id="export", status=Status.QUEUED).count() == 1
    threads.release(stored)
    threads.release(stored)


def test_a_queued_fire_is_cancelled_at_once_and_frees_its_place(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    job(interval=30, id="report", overlap="queue", args=[str(tmp_path / "notes")])(jobs.stop_when_cancelled)
    fire(registry, dispatcher)
    first = wait_for(lambda: Execution.objects.filter(job_id="report", status="running").first())
    fire(registry, dispatcher)
    queued = Execution.objects.get(job_id="report", status=Status.QUEUED)

    cancelled = control.cancel(queued.pk, "bob")
    assert cancelled.status == Status.CANCELLED
    assert cancelled.exception == "Cancelled by bob while it was queued behind a run still going"
    assert cancelled.retry_at is None
    fire(registry, dispatcher)  # the next fire may queue again
    assert Execution.objects.filter(job_id="report", status=Status.QUEUED).count() == 1
    control.cancel(first.pk, "bob")
    for row in Execution.objects.filter(job_id="report", status=Status.QUEUED):
        control.cancel(row.pk, "bob")
    wait_for(lambda: idle(dispatcher, threads), 20)


def test_a_queued_fire_is_started_by_the_next_leader(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    job(interval=30, id="report", overlap="queue", args=[str(tmp_path / "notes")])(jobs.stop_when_cancelled)
    fire(registry, dispatcher)
    first = wait_for(lambda: Execution.objects.filter(job_id="report", status="running").first())
    fire(registry, dispatcher)
    # This scheduler's run ends as if it died (recorded interrupted); another one leads now.
    control.cancel(first.pk, "test")
    wait_for(lambda: looked_at(threads) and threads.reserved == {}, 20)
    other_threads = ThreadTarget(Recorder(), max_workers=2)
    try:
        other = Dispatcher(JobStore(), other_threads.recorder, run_targets(other_threads))
        other.run_retries(datetime.now(UTC))
        queued = wait_for(
            lambda: Execution.objects.filter(job_id="report", queued=True, status="running").first()
        )
        control.cancel(queued.pk, "test")
        wait_for(lambda: idle(other, other_threads), 20)
    finally:
        other_threads.shutdown()
    assert Execution.objects.get(pk=queued.pk).status == Status.CANCELLED


def test_overlap_is_checked_where_it_is_given(registry: dict, admin_client: Client) -> None:
    with pytest.raises(JobDeclarationError, match="overlap must be one of skip, queue, replace, not 'later'"):
        job(interval=30, id="bad", overlap="later")(jobs.succeed)
    with pytest.raises(JobDeclarationError, match="overlap 'replace' cancels the oldest running run"):
        job(interval=30, id="bad", overlap="replace")(jobs.succeed)
    job(interval=30, id="report")(jobs.succeed)
    sync(JobStore(), registry.values())

    url = "/scheduling/api/jobs/report/reschedule/"
    response = admin_client.post(url, {"overlap": "replace"}, content_type="application/json")
    assert (response.status_code, response.json()["field"]) == (400, "overlap")
    response = admin_client.post(url, {"overlap": "queue"}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert policies_of(["report"])["report"].overlap == "queue"

    page = admin_client.get("/admin/scheduling/job/report/change/")
    form = page.context["adminform"].form
    assert form.initial["overlap"] == "queue"
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(kind="interval", every=30, unit="seconds", coalesce="on", overlap="replace", calendars=[])
    response = admin_client.post("/admin/scheduling/job/report/change/", data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["overlap"]
    assert errors[0].startswith("overlap 'replace' cancels the oldest running run")
