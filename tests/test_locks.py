"""Locks across jobs (``lock=``): jobs sharing a lock never run at the same time; a fire finding it
held follows the overlap policy and names the job holding it; the lock frees itself when its run
ends, however it ends; the database refuses a second holder and a stale leader takes none."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client

from scheduling import job
from scheduling.declarations import JobDeclarationError
from scheduling.fencing import Fence, FenceLost
from scheduling.history import locks
from scheduling.history.housekeeping import recover_interrupted
from scheduling.history.rows import Origin
from scheduling.models import Execution, RunLock, lock_key
from scheduling.placement import RunsIn
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore, policies_of
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off

pytestmark = pytest.mark.django_db(transaction=True)

Status = Execution.Status
T = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def fire(registry: dict, dispatcher: Dispatcher, *job_ids: str) -> None:
    """One fire of each of ``job_ids``, due now (the other jobs stay where they are)."""
    store = dispatcher.store
    sync(store, registry.values())
    stored = store.get_jobs_by_id(job_ids)
    for due in stored:
        due.next_run_time -= timedelta(seconds=30.1)
    store.update_jobs(stored)
    now = datetime.now(UTC)
    due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
    dispatcher.dispatch(due, now)


def threads_of(dispatcher: Dispatcher) -> ThreadTarget:
    target = dispatcher.targets[RunsIn.THREADS]
    assert isinstance(target, ThreadTarget)
    return target


def only(job_id: str, **where: object) -> Execution:
    return wait_for(lambda: Execution.objects.filter(job_id=job_id, **where).first())


def blocker(registry: dict, release: Path, max_instances: int = 1) -> None:
    """Job "a": holds the lock "warehouse" until the test creates ``release``."""
    job(interval=30, id="a", lock="warehouse", args=[str(release), 20], max_instances=max_instances)(
        jobs.wait_for_file
    )


# The lock itself: a row the database keeps unique, held while its run is going


def running_row(job_id: str, scheduled_at: datetime = T, attempt: int = 1) -> Execution:
    return Execution(job_id=job_id, scheduled_at=scheduled_at, attempt=attempt, status=Status.RUNNING)


def test_a_lock_is_held_while_its_run_is_going_and_free_once_it_ended() -> None:
    first = running_row("a")
    assert locks.take([("warehouse", first)], None) == []
    assert locks.holders(["warehouse"]) == {}  # its run is not recorded yet: nothing holds it
    first.save()
    assert locks.holders(["warehouse"]) == {"warehouse": locks.Holder("warehouse", "a", first.pk)}

    second = running_row("b")
    assert locks.take([("warehouse", second)], None) == ["warehouse"]
    assert RunLock.objects.get(name="warehouse").job_id == "a"

    Execution.objects.filter(pk=first.pk).update(status=Status.SUCCEEDED)
    assert locks.holders(["warehouse"]) == {}
    assert locks.take([("warehouse", second)], None) == []
    assert RunLock.objects.get(name="warehouse").job_id == "b"


def test_the_database_refuses_a_second_holder_of_a_lock() -> None:
    RunLock.objects.create(key=lock_key("warehouse"), name="warehouse", job_id="a", scheduled_at=T)
    with pytest.raises(IntegrityError), transaction.atomic():
        RunLock.objects.create(key=lock_key("warehouse"), name="warehouse", job_id="b", scheduled_at=T)


def test_lock_names_are_compared_byte_for_byte_on_every_database() -> None:
    # MariaDB's collation takes "Café" and "cafe" for equal; as locks they are two.
    first, second = running_row("a"), running_row("b")
    assert locks.take([("Café", first), ("cafe", second)], None) == []
    first.save()
    second.save()
    assert set(locks.holders(["Café", "cafe", "CAFE"])) == {"Café", "cafe"}


def test_a_scheduler_that_lost_the_lease_takes_no_lock() -> None:
    stale = Fence(uuid.uuid4(), 7)
    with pytest.raises(FenceLost):
        locks.take([("warehouse", running_row("a"))], stale)
    assert not RunLock.objects.exists()


def test_a_lock_held_by_a_run_of_a_dead_scheduler_is_free_once_that_run_is_recorded_interrupted() -> None:
    run = running_row("a")
    assert locks.take([("warehouse", run)], None) == []
    run.save()  # recorded by a scheduler without a row, as good as dead
    assert "warehouse" in locks.holders(["warehouse"])
    assert recover_interrupted() == 1
    assert locks.holders(["warehouse"]) == {}


# What a fire does when it finds its lock held


def test_of_two_jobs_sharing_a_lock_due_together_one_runs_and_the_other_is_skipped_naming_it(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job(interval=30, id="a", lock="warehouse", args=[str(release), 20])(jobs.wait_for_file)
    job(interval=30, id="b", lock="warehouse", args=[str(release), 20])(jobs.wait_for_file)
    fire(registry, dispatcher, "a", "b")
    running = Execution.objects.get(status=Status.RUNNING)
    other = "b" if running.job_id == "a" else "a"
    skipped = Execution.objects.get(job_id=other)
    assert skipped.status == Status.SKIPPED
    assert skipped.exception == f'Skipped: the lock "warehouse" was held by job {running.job_id}'

    fire(registry, dispatcher, other)  # a later fire names the run holding it
    later = Execution.objects.filter(job_id=other).latest("pk")
    assert later.status == Status.SKIPPED
    assert later.exception == (
        f'Skipped: the lock "warehouse" was held by job {running.job_id} (run {running.pk})'
    )
    release.touch()
    wait_for(lambda: threads_of(dispatcher).wait(0.1))
    fire(registry, dispatcher, other)  # free again: it runs
    wait_for(lambda: Execution.objects.filter(job_id=other).latest("pk").status == Status.SUCCEEDED)


def test_a_job_with_a_lock_runs_one_run_at_a_time_whatever_its_max_instances(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker(registry, release, max_instances=3)
    fire(registry, dispatcher, "a")
    fire(registry, dispatcher, "a")
    assert list(Execution.objects.order_by("pk").values_list("status", flat=True)) == [
        Status.RUNNING,
        Status.SKIPPED,
    ]
    release.touch()
    wait_for(lambda: threads_of(dispatcher).wait(0.1))


def test_a_queued_fire_waits_for_the_other_jobs_run_holding_its_lock_then_runs(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker(registry, release)
    job(interval=30, id="b", lock="warehouse", overlap="queue", misfire_grace_time=1)(jobs.succeed)
    fire(registry, dispatcher, "a")
    holder = only("a", status=Status.RUNNING)
    fire(registry, dispatcher, "b")
    queued = Execution.objects.get(job_id="b")
    assert queued.status == Status.QUEUED

    def past_its_grace() -> bool:
        dispatcher.run_retries(datetime.now(UTC))  # the lock is held: it waits
        return (datetime.now(UTC) - queued.scheduled_at).total_seconds() > 1.5

    wait_for(past_its_grace)
    assert Execution.objects.get(pk=queued.pk).status == Status.QUEUED
    release.touch()

    def ran() -> bool:
        dispatcher.run_retries(datetime.now(UTC))
        return Execution.objects.filter(pk=queued.pk, status=Status.SUCCEEDED).exists()

    wait_for(ran)  # however late: a queued fire is not missed
    holder.refresh_from_db()
    queued.refresh_from_db()
    assert holder.status == Status.SUCCEEDED
    assert queued.started_at is not None
    assert holder.finished_at is not None
    assert queued.started_at >= holder.finished_at


def test_a_retry_waits_for_its_lock(registry: dict, dispatcher: Dispatcher, tmp_path: Path) -> None:
    calls, release = tmp_path / "calls", tmp_path / "release"
    job(interval=30, id="b", lock="warehouse", retries=1, retry_backoff=0, args=[str(calls), 1])(
        jobs.fail_until
    )
    fire(registry, dispatcher, "b")
    only("b", status=Status.FAILED, retry_at__isnull=False)
    blocker(registry, release)
    fire(registry, dispatcher, "a")
    holder = only("a", status=Status.RUNNING)
    dispatcher.run_retries(datetime.now(UTC))
    assert not Execution.objects.filter(job_id="b", attempt=2).exists()
    assert Execution.objects.filter(job_id="b", retry_at__isnull=False).exists()  # still pending
    release.touch()
    wait_for(lambda: Execution.objects.filter(pk=holder.pk, status=Status.SUCCEEDED).exists())

    def retried() -> Execution | None:
        dispatcher.run_retries(datetime.now(UTC))
        return Execution.objects.filter(job_id="b", attempt=2, status=Status.SUCCEEDED).first()

    second = wait_for(retried)
    holder.refresh_from_db()
    assert second.started_at >= holder.finished_at


def test_run_now_of_a_job_whose_lock_is_held_is_recorded_skipped_naming_the_holder(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocker(registry, release)
    job(interval=30, id="b", lock="warehouse")(jobs.succeed)
    fire(registry, dispatcher, "a")
    holder = only("a", status=Status.RUNNING)
    b = dispatcher.store.lookup_job("b")
    taken: list[int] = []

    def take() -> bool:
        taken.append(1)
        return True

    dispatcher.run_requested(b, datetime.now(UTC), Origin(Execution.Origin.MANUAL, "alice"), take)
    row = Execution.objects.get(job_id="b")
    assert (row.status, row.requested_by, taken) == (Status.SKIPPED, "alice", [1])
    assert row.exception == f'Skipped: the lock "warehouse" was held by job a (run {holder.pk})'
    release.touch()
    wait_for(lambda: threads_of(dispatcher).wait(0.1))


def test_a_run_waiting_for_a_task_worker_holds_its_lock_until_the_worker_ends_it(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="a", lock="warehouse", runs_in="tasks")(jobs.succeed)
    job(interval=30, id="b", lock="warehouse")(jobs.succeed)
    fire(registry, dispatcher, "a")
    enqueued = Execution.objects.get(job_id="a")
    assert enqueued.status == Status.ENQUEUED
    fire(registry, dispatcher, "b")
    assert Execution.objects.get(job_id="b").exception.endswith(f"held by job a (run {enqueued.pk})")
    work_off()
    assert Execution.objects.get(pk=enqueued.pk).status == Status.SUCCEEDED
    fire(registry, dispatcher, "b")
    wait_for(lambda: Execution.objects.filter(job_id="b").latest("pk").status == Status.SUCCEEDED)


# Declared, changed and shown wherever a job's options are


def test_a_lock_is_checked_where_it_is_given_and_shown(registry: dict, admin_client: Client) -> None:
    with pytest.raises(JobDeclarationError, match="lock must be text of at most 100 characters, not 5"):
        job(interval=30, id="bad", lock=5)(jobs.succeed)  # type: ignore[arg-type]
    with pytest.raises(JobDeclarationError, match="lock must be text of at most 100 characters, not 101"):
        job(interval=30, id="bad", lock="x" * 101)(jobs.succeed)
    job(interval=30, id="report", lock="  ")(jobs.succeed)  # blank: no lock
    assert registry["report"].policy == {}
    sync(JobStore(), registry.values())

    url = "/scheduling/api/jobs/report/reschedule/"
    response = admin_client.post(url, {"lock": ["x"]}, content_type="application/json")
    assert (response.status_code, response.json()["field"]) == (400, "lock")
    response = admin_client.post(url, {"lock": "warehouse"}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert policies_of(["report"])["report"].lock == "warehouse"
    assert admin_client.get("/scheduling/api/jobs/report/").json()["lock"] == "warehouse"

    out = io.StringIO()
    call_command("scheduling", "show", "report", stdout=out)
    assert "  lock:     warehouse\n" in out.getvalue()

    page = admin_client.get("/admin/scheduling/job/report/change/")
    assert page.context["adminform"].form.initial["lock"] == "warehouse"
    assert "warehouse <small>(free)</small>" in page.content.decode()
    run = Execution.objects.create(job_id="report", scheduled_at=T, status=Status.RUNNING)
    RunLock.objects.create(key=lock_key("warehouse"), name="warehouse", job_id="report", scheduled_at=T)
    held = admin_client.get("/admin/scheduling/job/report/change/").content.decode()
    assert "held by job report," in held
    assert f'href="/admin/scheduling/execution/{run.pk}/change/">run {run.pk}</a>' in held

    form = admin_client.get("/admin/scheduling/job/report/change/").context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(kind="interval", every=30, unit="seconds", coalesce="on", calendars=[], lock="")
    response = admin_client.post("/admin/scheduling/job/report/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert policies_of(["report"])["report"].lock is None
