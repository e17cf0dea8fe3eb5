"""Timeouts and cancel: a run that must stop, stopped where it can be and flagged where it cannot."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from scheduling import control, job, validation
from scheduling.checks import thread_timeout_messages
from scheduling.declarations import JobDeclarationError
from scheduling.history.recorder import Recorder
from scheduling.models import Execution, ExecutionQuerySet
from scheduling.placement import RunsIn
from scheduling.runs import processes
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off
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


def start_due(registry: dict, dispatcher: Dispatcher) -> None:
    sync(dispatcher.store, registry.values())
    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))


def finished(threads: ThreadTarget, job_id: str, timeout: float = 60) -> Execution:
    """The job's run once it has ended; the scheduler's tick (live.check) goes on meanwhile."""

    def ended() -> Execution | None:
        threads.live.check()
        run = Execution.objects.filter(job_id=job_id).first()
        return run if run is not None and run.status not in ("running", "overrunning") else None

    run = wait_for(ended, timeout)
    assert threads.wait(10)
    return run


def running(job_id: str) -> Execution:
    return wait_for(lambda: Execution.objects.filter(job_id=job_id, status="running").first())


def test_a_run_in_the_process_pool_is_stopped_at_its_timeout_and_the_next_run_gets_a_new_child(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    job(interval=30, id="slow", runs_in="processes", timeout=1, args=[60])(jobs.sleep)
    start_due(registry, dispatcher)

    run = finished(threads, "slow")
    assert run.status == Status.TIMED_OUT
    assert run.exception == "Timed out: stopped after its timeout of 1 s"
    assert run.duration is not None
    assert 1 <= run.duration < 30
    assert threads.reserved == {}  # the slot is free once the child is gone

    notes = tmp_path / "notes"
    job(interval=30, id="after", runs_in="processes", args=[str(notes)])(jobs.note_process)
    dispatcher.store.remove_job("slow")
    start_due(registry, dispatcher)
    assert finished(threads, "after").status == Status.SUCCEEDED


def test_a_job_that_ignores_sigterm_is_still_stopped_with_sigkill(
    registry: dict,
    dispatcher: Dispatcher,
    threads: ThreadTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "STOP_GRACE", 1.0)
    notes = tmp_path / "notes"
    job(interval=30, id="stubborn", runs_in="processes", timeout=5, args=[str(notes), 60])(
        jobs.ignore_sigterm_and_sleep
    )
    start_due(registry, dispatcher)

    run = finished(threads, "stubborn")
    assert run.status == Status.TIMED_OUT
    assert "with SIGKILL: it had not ended 1 s after SIGTERM" in run.exception
    assert notes.read_text().startswith("started")
    assert "finished" not in notes.read_text()


def test_a_thread_run_past_its_timeout_is_marked_overrunning_and_can_see_it(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="cooperative", timeout=1, args=[str(notes)])(jobs.stop_at_deadline)
    job(interval=30, id="stuck", timeout=1, args=[3])(jobs.sleep)
    start_due(registry, dispatcher)

    def overrunning() -> bool:
        threads.live.check()
        return Execution.objects.filter(job_id="stuck", status=Status.OVERRUNNING).exists()

    wait_for(overrunning, 10)
    assert threads.reserved["stuck"] == 1  # its code still runs: the slot stays taken
    assert finished(threads, "stuck").status == Status.SUCCEEDED  # a thread ends when its code does
    assert finished(threads, "cooperative").status == Status.SUCCEEDED
    assert notes.read_text() == "started\ndeadline passed: True\n"


def test_a_thread_run_is_told_of_a_cancel_and_recorded_cancelled_by_whom(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="cancellable", args=[str(notes)])(jobs.stop_when_cancelled)
    start_due(registry, dispatcher)
    run = running("cancellable")

    asked = control.cancel(run.pk, "alice")
    assert (asked.status, asked.cancel_requested_by) == (Status.RUNNING, "alice")

    run = finished(threads, "cancellable")
    assert run.status == Status.CANCELLED
    assert run.exception == "Cancelled by alice; the job returned (succeeded) after the request"
    assert notes.read_text().endswith("cancel requested: True\n")


def test_a_cancelled_run_in_the_process_pool_is_stopped(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="long", runs_in="processes", args=[str(notes), 60])(jobs.ignore_sigterm_and_sleep)
    start_due(registry, dispatcher)
    run = running("long")
    wait_for(lambda: notes.exists())

    control.cancel(run.pk, "bob")

    run = finished(threads, "long")
    assert run.status == Status.CANCELLED
    assert run.exception.startswith("Cancelled by bob: its process was stopped")
    assert "finished" not in notes.read_text()


def test_a_run_waiting_for_a_task_worker_is_cancelled_at_once_and_never_runs(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="queued", runs_in="tasks", args=[str(notes)])(jobs.note_process)
    start_due(registry, dispatcher)
    run = Execution.objects.get(job_id="queued")
    assert run.status == Status.ENQUEUED

    cancelled = control.cancel(run.pk, "carol")
    assert cancelled.status == Status.CANCELLED
    assert cancelled.exception == "Cancelled by carol before a task worker took it"
    work_off()
    assert not notes.exists()
    assert Execution.objects.get(pk=run.pk).status == Status.CANCELLED


def test_a_task_worker_stops_a_run_at_its_timeout_in_a_child_process(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "STOP_GRACE", 1.0)
    notes = tmp_path / "notes"
    job(interval=30, id="worker-slow", runs_in="tasks", timeout=5, args=[str(notes), 60])(
        jobs.ignore_sigterm_and_sleep
    )
    start_due(registry, dispatcher)
    work_off()

    run = Execution.objects.get(job_id="worker-slow")
    assert run.status == Status.TIMED_OUT, run.exception
    assert "SIGKILL" in run.exception
    pid = int(notes.read_text().split()[1])
    assert pid != run.pid  # the job ran in a child of the worker, which was stopped


def test_cancel_refuses_unknown_and_ended_runs_by_name() -> None:
    with pytest.raises(control.UnknownRunError, match="No run with id 999"):
        control.cancel(999)
    ended = Execution.objects.create(
        job_id="done", status=Status.SUCCEEDED, scheduled_at=timezone.now(), finished_at=timezone.now()
    )
    with pytest.raises(control.RunEndedError, match=r"Run \d+ of job 'done' has ended already \(Succeeded\)"):
        control.cancel(ended.pk, "alice")
    assert Execution.objects.get(pk=ended.pk).cancel_requested_at is None


def test_a_run_a_cancel_ended_is_cancelled_again_and_one_that_ended_meanwhile_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = Execution.objects.create(
        job_id="report", status=Status.ENQUEUED, ran_in=RunsIn.TASKS, scheduled_at=timezone.now()
    )
    assert control.cancel(waiting.pk, "alice").status == Status.CANCELLED
    again = control.cancel(waiting.pk, "bob")
    assert (again.status, again.cancel_requested_by) == (Status.CANCELLED, "alice")
    stopped = running_row()
    control.cancel(stopped.pk, "alice")
    Execution.objects.filter(pk=stopped.pk).update(status=Status.CANCELLED, finished_at=timezone.now())
    assert control.cancel(stopped.pk, "bob").status == Status.CANCELLED  # as a second cancel of it running

    # The run ends (succeeded) between the UPDATE that asks it to stop and the re-read.
    ending = running_row()
    first = ExecutionQuerySet.first

    def ends_first(runs: ExecutionQuerySet) -> Execution | None:
        Execution.objects.filter(pk=ending.pk).update(status=Status.SUCCEEDED, finished_at=timezone.now())
        return first(runs)

    monkeypatch.setattr(ExecutionQuerySet, "first", ends_first)
    with pytest.raises(control.RunEndedError, match="has ended already"):
        control.cancel(ending.pk, "alice")


def running_row(job_id: str = "report") -> Execution:
    return Execution.objects.create(
        job_id=job_id, status=Status.RUNNING, scheduled_at=timezone.now(), started_at=timezone.now()
    )


def test_the_command_cancels_a_run() -> None:
    run = running_row()
    out = io.StringIO()
    call_command("scheduling", "cancel", str(run.pk), stdout=out)
    assert (
        out.getvalue().strip()
        == f"Run {run.pk} of report: cancel requested; it is stopped within a few seconds"
    )
    assert Execution.objects.get(pk=run.pk).cancel_requested_by.startswith("cli:")
    out = io.StringIO()
    call_command("scheduling", "cancel", str(run.pk), "--json", stdout=out)
    assert json.loads(out.getvalue())["result"] == "cancel requested"
    Execution.objects.filter(pk=run.pk).update(status=Status.CANCELLED)  # the cancel stopped it
    out = io.StringIO()
    call_command("scheduling", "cancel", str(run.pk), stdout=out)
    assert out.getvalue().strip() == f"Run {run.pk} of report: cancelled"
    with pytest.raises(CommandError, match="No run with id 123456; nothing was cancelled"):
        call_command("scheduling", "cancel", "123456")
    with pytest.raises(CommandError, match="run_id"):
        call_command("scheduling", "cancel", "0")


def test_the_api_cancels_a_run_with_the_cancel_permission(registry: dict, admin_client: Client) -> None:
    job(interval=30, id="report")(jobs.succeed)
    sync(JobStore(), registry.values())
    run = running_row()
    url = f"/scheduling/api/runs/{run.pk}/cancel/"
    response = admin_client.post(url)
    assert response.status_code == 202, response.content
    assert response.json()["result"] == "cancel requested"
    assert response.json()["cancel_requested_by"] == "admin"
    assert LogEntry.objects.filter(
        object_id="report", change_message=f"Asked to cancel run {run.pk} (API)"
    ).exists()

    assert admin_client.post("/scheduling/api/runs/987654/cancel/").json()["code"] == "unknown_run"
    Execution.objects.filter(pk=run.pk).update(status=Status.CANCELLED)  # the cancel stopped it
    response = admin_client.post(url)
    assert (response.status_code, response.json()["result"]) == (200, "cancelled")
    Execution.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED)
    response = admin_client.post(url)
    assert (response.status_code, response.json()["code"]) == (409, "run_ended")

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(viewer)
    response = client.post(f"/scheduling/api/runs/{running_row('other').pk}/cancel/")
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


def test_the_admin_cancels_from_the_run_page_and_from_the_job_page(
    registry: dict, admin_client: Client
) -> None:
    job(interval=30, id="report")(jobs.succeed)
    sync(JobStore(), registry.values())
    run = running_row()
    page = admin_client.get(f"/admin/scheduling/execution/{run.pk}/change/")
    assert b"Cancel run" in page.content
    response = admin_client.post(f"/admin/scheduling/execution/{run.pk}/cancel/")
    assert response.status_code == 302
    assert Execution.objects.get(pk=run.pk).cancel_requested_by == "admin"
    page = admin_client.get(f"/admin/scheduling/execution/{run.pk}/change/", follow=True)
    assert b"by admin at" in page.content
    Execution.objects.filter(pk=run.pk).update(status=Status.CANCELLED)  # the cancel stopped it
    response = admin_client.post(f"/admin/scheduling/execution/{run.pk}/cancel/", follow=True)
    assert f"Run {run.pk} was cancelled.".encode() in response.content

    other = running_row()
    job_page = "/admin/scheduling/job/report/change/"
    assert b"scheduling-cancel" in admin_client.get(job_page).content
    response = admin_client.post(f"/admin/scheduling/execution/{other.pk}/cancel/", {"next": job_page})
    assert response["Location"] == job_page
    assert Execution.objects.get(pk=other.pk).cancel_requested_at is not None
    response = admin_client.post(
        f"/admin/scheduling/execution/{other.pk}/cancel/", {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/admin/scheduling/execution/{other.pk}/change/"


def test_the_admin_cancel_needs_the_permission(client: Client) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    run = running_row()
    assert b"Cancel run" not in client.get(f"/admin/scheduling/execution/{run.pk}/change/").content
    assert client.post(f"/admin/scheduling/execution/{run.pk}/cancel/").status_code == 403
    assert Execution.objects.get(pk=run.pk).cancel_requested_at is None


def test_a_timeout_on_a_thread_job_is_warned_about_by_the_system_check(registry: dict) -> None:
    job(interval=30, id="threads-timeout", timeout=5)(jobs.succeed)
    job(interval=30, id="processes-timeout", runs_in="processes", timeout=5)(jobs.succeed)
    messages = thread_timeout_messages(registry.values())
    assert [message.id for message in messages] == ["scheduling.W005"]
    assert "'threads-timeout' declares timeout=5" in messages[0].msg
    assert RunsIn.PROCESSES in str(messages[0].hint)


def test_a_job_that_exits_on_sigterm_is_not_waited_for_nor_killed(
    registry: dict,
    dispatcher: Dispatcher,
    threads: ThreadTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "STOP_GRACE", 30.0)
    notes = tmp_path / "notes"
    job(interval=30, id="tidy", runs_in="processes", timeout=5, args=[str(notes), 60])(jobs.exit_on_sigterm)
    start_due(registry, dispatcher)

    run = finished(threads, "tidy")
    assert run.status == Status.TIMED_OUT
    assert run.exception == "Timed out: stopped after its timeout of 5 s"  # no SIGKILL needed
    assert run.duration is not None
    assert run.duration < 20  # not the 30 s grace
    assert notes.read_text().endswith("cleaned up\n")


def test_a_run_cancelled_while_it_waits_for_a_child_never_starts(
    registry: dict, dispatcher: Dispatcher, threads: ThreadTarget, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="hog", runs_in="processes", args=[60])(jobs.sleep)  # the pool's one child
    job(interval=30, id="waiting", runs_in="processes", args=[str(notes)])(jobs.note_process)
    start_due(registry, dispatcher)
    hog = running("hog")
    waiting = running("waiting")  # recorded running, waiting for the child
    control.cancel(waiting.pk, "carol")
    threads.live.check()  # the scheduler's tick: it raises the waiting run's flag
    control.cancel(hog.pk, "carol")

    run = finished(threads, "waiting")
    assert run.status == Status.CANCELLED
    assert run.exception == "Cancelled by carol before it started"
    assert not notes.exists()


def test_a_task_job_timeout_must_be_shorter_than_the_task_timeout(registry: dict, settings: Any) -> None:
    settings.SCHEDULING_TASK_TIMEOUT = 600
    with pytest.raises(
        JobDeclarationError, match=r"timeout must be shorter than SCHEDULING_TASK_TIMEOUT \(600 s\)"
    ):
        job(interval=30, id="long-task", runs_in="tasks", timeout=600)(jobs.succeed)
    job(interval=30, id="task", runs_in="tasks", timeout=599)(jobs.succeed)
    sync(JobStore(), registry.values())
    with pytest.raises(validation.InputError, match="SCHEDULING_TASK_TIMEOUT"):
        control.change("task", timeout=3600)
