"""A site upgraded from the version before the regroup (8f7a4ae) loads every job and task it stored.

The rows in ``support/upgrade/rows_8f7a4ae.json`` were written by that version's code (see
``support/upgrade/make_rows_8f7a4ae.py``): pickled jobs naming its import paths, the sync's
bookkeeping, and a task it enqueued, still waiting for a worker.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core import serializers
from django.db import IntegrityError, connection
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string

from scheduling import declarations
from scheduling.models import Execution, ScheduledJob
from scheduling.runs import worker_task
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support.task_worker import work_off
from tests.support.upgrade import jobs

FIXTURE = json.loads((Path(__file__).parent / "support" / "upgrade" / "rows_8f7a4ae.json").read_text())
JOB_IDS = sorted(FIXTURE["fires"])
OLD_TASK_PATH = "scheduling.tasks.run_scheduled_job"


@pytest.fixture
def old_rows(db: None) -> None:
    for row in serializers.deserialize("json", json.dumps(FIXTURE["rows"])):
        row.save()


@pytest.fixture
def old_declarations(monkeypatch: pytest.MonkeyPatch) -> dict[str, declarations.Declaration]:
    """The declarations the old site had: the built-in job and the fixture's, declared today."""
    builtin = declarations.registry["scheduling.prune_history"]
    fresh = {builtin.id: builtin}
    monkeypatch.setattr(declarations, "registry", fresh)
    jobs.declare()
    return fresh


def chain(trigger: Any, first: datetime | None) -> list[str | None]:
    """The fixture script's computation: ``first`` and the fires that follow it."""
    fires: list[str | None] = []
    fire = first
    while len(fires) < len(FIXTURE["fires"][JOB_IDS[0]]["from_next_run_time"]):
        fires.append(fire.isoformat() if fire else None)
        fire = trigger.get_next_fire_time(fire, fire) if fire else None
    return fires


def test_the_fixture_has_a_job_of_each_kind() -> None:
    stored = [row["pk"] for row in FIXTURE["rows"] if row["model"] == "django_apscheduler.djangojob"]
    assert sorted(stored) == JOB_IDS
    assert len(JOB_IDS) == 9
    assert FIXTURE["declared"] == [
        "scheduling.prune_history",
        *(f"upgrade.{name}" for name in ("cron_fields", "crontab", "date", "interval", "processes", "tasks")),
    ]


@pytest.mark.usefixtures("old_rows")
def test_every_stored_job_loads() -> None:
    store = JobStore()

    loaded = {job.id: job for job in store.get_all_jobs()}

    assert sorted(loaded) == JOB_IDS
    for job_id in JOB_IDS:
        assert store.lookup_job(job_id) is not None
    assert {job_id: type(job.trigger).__qualname__ for job_id, job in loaded.items()} == {
        "scheduling.prune_history": "CrontabTrigger",
        "upgrade.cron_fields": "CrontabTrigger",
        "upgrade.crontab": "CrontabTrigger",
        "upgrade.date": "LocalDateTrigger",
        "upgrade.external": "CrontabTrigger",
        "upgrade.interval": "ElapsedIntervalTrigger",
        "upgrade.processes": "ElapsedIntervalTrigger",
        "upgrade.tasks": "ElapsedIntervalTrigger",
        "upgrade.wall_clock": "WallClockCronTrigger",
    }
    assert {job_id: job.executor for job_id, job in loaded.items() if job.executor != "default"} == {
        "upgrade.processes": "processes",
        "upgrade.tasks": "tasks:default:reports",
    }
    assert (loaded["upgrade.crontab"].args, loaded["upgrade.crontab"].kwargs) == ((1, "two"), {"three": 3})
    assert loaded["upgrade.external"].next_run_time is None  # paused by its operator
    assert not ScheduledJob.objects.exclude(import_error="").exists()


@pytest.mark.usefixtures("old_rows")
def test_stored_jobs_fire_when_the_old_code_computed() -> None:
    fixed_now = datetime.fromisoformat(FIXTURE["fixed_now"])

    fires = {
        job.id: {
            "from_next_run_time": chain(job.trigger, job.next_run_time),
            "from_fixed_now": chain(job.trigger, job.trigger.get_next_fire_time(None, fixed_now)),
        }
        for job in JobStore().get_all_jobs()
    }

    assert fires == FIXTURE["fires"]


@pytest.mark.usefixtures("old_rows")
def test_sync_finds_the_stored_jobs_as_the_old_code_left_them(old_declarations: dict) -> None:
    report = sync(JobStore(), old_declarations.values())

    assert report.summary() == ""
    assert not ScheduledJob.objects.exclude(import_error="").exists()


@pytest.mark.usefixtures("old_rows")
def test_the_admin_lists_the_stored_jobs(admin_client: Client) -> None:
    response = admin_client.get("/admin/scheduling/job/?all=")

    assert response.status_code == 200
    for job_id in JOB_IDS:
        assert job_id in response.text


@pytest.mark.usefixtures("old_rows")
@pytest.mark.parametrize("job_id", JOB_IDS)
def test_the_admin_shows_each_stored_job(admin_client: Client, job_id: str) -> None:
    assert admin_client.get(f"/admin/scheduling/job/{job_id}/change/").status_code == 200


def test_the_old_task_path_names_the_task_the_scheduler_enqueues() -> None:
    old = import_string(OLD_TASK_PATH)

    assert old is worker_task.run_scheduled_job
    assert worker_task._task("default", "reports").func is old.func


@pytest.mark.django_db(transaction=True)
def test_a_task_the_old_code_enqueued_runs_on_a_worker_of_today(
    old_rows: None, old_declarations: dict
) -> None:
    pytest.importorskip("django_tasks_db")
    from django_tasks_db.models import DBTaskResult

    task = DBTaskResult.objects.get()
    assert task.task_path == OLD_TASK_PATH
    # As if the site was upgraded while the task waited, within the job's misfire grace.
    Execution.objects.filter(job_id="upgrade.tasks").update(scheduled_at=timezone.now())
    jobs.calls.clear()

    work_off()

    task.refresh_from_db()
    assert task.status == "SUCCESSFUL"
    execution = Execution.objects.get(job_id="upgrade.tasks")
    assert (execution.status, execution.task_id) == ("succeeded", str(task.id))
    assert jobs.calls == ["upgrade.tasks [] [('via', 'tasks')]"]


@pytest.mark.django_db(transaction=True)
def test_rows_of_the_old_code_are_first_attempts_and_each_attempt_is_unique(old_rows: None) -> None:
    row = Execution.objects.get(job_id="upgrade.tasks")
    assert (row.attempt, row.attempts, row.retry_at) == (1, 1, None)
    with pytest.raises(IntegrityError):
        Execution.objects.create(job_id=row.job_id, scheduled_at=row.scheduled_at, status="failed")
    retry = Execution.objects.create(
        job_id=row.job_id, scheduled_at=row.scheduled_at, status="running", attempt=2
    )
    assert retry.pk != row.pk


def test_a_scheduler_of_the_old_code_can_still_record_runs_during_a_rolling_upgrade(db: None) -> None:
    # The columns the old code's INSERT names (8f7a4ae): the new ones get their database defaults.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO scheduling_execution (job_id, status, origin, requested_by, scheduled_at, "
            "exception, traceback, ran_in, task_id, hostname) "
            "VALUES ('old.scheduler', 'running', 'schedule', '', %s, '', '', 'threads', '', 'old-host')",
            [timezone.now()],
        )
    row = Execution.objects.get(job_id="old.scheduler")
    assert (row.attempt, row.attempts, row.queued, row.cancel_requested_by) == (1, 1, False, "")
