"""A site coming from plain django-apscheduler keeps every job and every history row.

The test database starts as such a site's: our app's migrations rolled back, then
django-apscheduler's README pattern run for real until it has written history. Then the site
installs this app (``migrate``), its operators look at the admin, and our scheduler takes over.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.conf import settings
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from scheduling.models import Execution
from scheduling.runtime.service import Runner
from tests.conftest import wait_for
from tests.support import legacy_jobs

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTIONS = "/admin/scheduling/execution/"
JOBS = "/admin/scheduling/job/"
# What each django-apscheduler status means in our history.
IMPORTED_STATUS = {
    "Executed": "succeeded",
    "Error!": "failed",
    "Missed!": "missed",
    "Max instances!": "skipped",
    "Started execution": "interrupted",
}
EVERY_SECOND = ["my_job", "failing_job"]
OLD_JOBS = {*EVERY_SECOND, "paused_job", "delete_old_job_executions"}


@pytest.fixture
def site_without_our_app(transactional_db: None) -> Iterator[None]:
    """The test database as a site that never installed this app: only our tables are gone."""
    call_command("migrate", "scheduling", "zero", verbosity=0)
    yield
    # Wherever the test stopped, bring our tables back for the flush and the tests after it.
    call_command("migrate", verbosity=0)


def stock_runs(job_id: str, status: str | None = None) -> int:
    runs = DjangoJobExecution.objects.filter(job_id=job_id)
    return (runs.filter(status=status) if status else runs).count()


def run_django_apscheduler_as_its_readme_shows() -> None:
    """The README's management command, with a BackgroundScheduler so that the test can stop it.

    ``DjangoJobStore`` records the history itself (its ``start`` registers the listeners).
    """
    scheduler = BackgroundScheduler(timezone=settings.TIME_ZONE)
    scheduler.add_jobstore(DjangoJobStore(), "default")
    scheduler.add_job(
        legacy_jobs.my_job,
        trigger=CronTrigger(second="*"),
        id="my_job",
        max_instances=1,
        replace_existing=True,
    )
    scheduler.add_job(
        legacy_jobs.failing_job,
        trigger=IntervalTrigger(seconds=1),
        id="failing_job",
        max_instances=1,
        replace_existing=True,
    )
    scheduler.add_job(
        legacy_jobs.my_job,
        trigger=CronTrigger(second="*"),
        id="paused_job",
        max_instances=1,
        replace_existing=True,
    )
    scheduler.add_job(
        legacy_jobs.delete_old_job_executions,
        trigger=CronTrigger(day_of_week="mon", hour="00", minute="00"),
        id="delete_old_job_executions",
        max_instances=1,
        replace_existing=True,
    )
    scheduler.start()
    try:
        wait_for(lambda: stock_runs("paused_job", DjangoJobExecution.SUCCESS), timeout=15)
        scheduler.pause_job("paused_job")
        wait_for(
            lambda: (
                stock_runs("my_job", DjangoJobExecution.SUCCESS) >= 3
                and stock_runs("failing_job", DjangoJobExecution.ERROR) >= 3
            ),
            timeout=20,
        )
    finally:
        scheduler.shutdown()  # waits for running jobs, so their rows are final


def stock_history() -> list[dict[str, Any]]:
    return list(
        DjangoJobExecution.objects.order_by("pk").values(
            "pk", "job_id", "status", "run_time", "duration", "finished", "exception", "traceback"
        )
    )


def changelist_row(page: str, change_url: str) -> str:
    """The table row of a changelist page that links to ``change_url``."""
    rows = [row.split("</tr>")[0] for row in page.split("<tr")[1:] if change_url in row]
    assert len(rows) == 1, f"{change_url} is in {len(rows)} rows"
    return rows[0]


def job_url(job_id: str) -> str:
    return f"{JOBS}{quote(job_id)}/change/"


def execution_url(execution: Execution) -> str:
    return f"{EXECUTIONS}{execution.pk}/change/"


def new_runs(job_id: str, status: str) -> int:
    return Execution.objects.filter(job_id=job_id, origin="schedule", status=status).count()


def new_statuses(job_id: str) -> list[str]:
    return list(Execution.objects.filter(job_id=job_id, origin="schedule").values_list("status", flat=True))


def scheduled_times(job_id: str) -> list[datetime]:
    runs = Execution.objects.filter(job_id=job_id, origin="schedule").order_by("scheduled_at")
    return list(runs.values_list("scheduled_at", flat=True))


def assert_history_imported(old: list[dict[str, Any]]) -> None:
    imported = {(row.job_id, row.scheduled_at): row for row in Execution.objects.filter(origin="imported")}
    assert len(imported) == len(old) == Execution.objects.count()
    for row in old:
        execution = imported[row["job_id"], row["run_time"]]
        assert execution.status == IMPORTED_STATUS[row["status"]]
        assert execution.exception == (row["exception"] or "")
        assert execution.traceback == (row["traceback"] or "")
        if row["finished"] is None:
            assert execution.finished_at is None
        else:
            assert execution.finished_at is not None
            assert abs(execution.finished_at.timestamp() - float(row["finished"])) < 0.01
    failure = Execution.objects.filter(origin="imported", job_id="failing_job").first()
    assert failure is not None
    assert failure.status == "failed"
    assert failure.exception == "the legacy job fails on purpose"
    assert 'raise RuntimeError("the legacy job fails on purpose")' in failure.traceback


def assert_history_in_admin(client: Client, django_assert_max_num_queries: Any) -> None:
    with django_assert_max_num_queries(5):
        page = client.get(EXECUTIONS + "?origin__exact=imported").text
    for execution in Execution.objects.filter(origin="imported"):
        row = changelist_row(page, execution_url(execution))
        assert execution.job_id in row
        assert str(execution.get_status_display()) in row
        assert "Imported from django-apscheduler" in row
    failure = Execution.objects.filter(origin="imported", status="failed").first()
    assert failure is not None
    detail = client.get(execution_url(failure)).text
    assert "the legacy job fails on purpose" in detail
    assert "raise RuntimeError(&quot;the legacy job fails on purpose&quot;)" in detail
    found = client.get(EXECUTIONS + "?q=fails+on+purpose").text
    for execution in Execution.objects.filter(status="failed"):
        changelist_row(found, execution_url(execution))


def assert_jobs_in_admin(client: Client, django_assert_max_num_queries: Any) -> None:
    """Each old job with its function, its schedule in words and its state."""
    with django_assert_max_num_queries(9):  # the status panel reads the maintenance pause too
        page = client.get(JOBS).text
    expected = {
        "my_job": ("tests.support.legacy_jobs:my_job", "Every second", "scheduled, added outside the code"),
        "failing_job": (
            "tests.support.legacy_jobs:failing_job",
            "Every second",
            "scheduled, added outside the code",
        ),
        "paused_job": ("tests.support.legacy_jobs:my_job", "Every second", "paused, added outside the code"),
        "delete_old_job_executions": (
            "tests.support.legacy_jobs:delete_old_job_executions",
            "At 00:00, only on Monday",
            "scheduled, added outside the code",
        ),
    }
    for job_id, texts in expected.items():
        row = changelist_row(page, job_url(job_id))
        for text in texts:
            assert text in row, (job_id, text, row)


def assert_imported_runs_summarised(client: Client) -> None:
    """Imported runs count in a job's success rate and are listed on its page; no duration."""
    page = client.get(JOBS).text
    assert '<td class="field-recent_runs">100% succeeded</td>' in changelist_row(page, job_url("my_job"))
    assert '<td class="field-recent_runs">0% succeeded</td>' in changelist_row(page, job_url("failing_job"))
    detail = client.get(job_url("failing_job")).text
    for execution in Execution.objects.filter(job_id="failing_job"):
        assert execution_url(execution) in detail


def assert_old_jobs_ran_on_their_schedule(old_jobs: dict[str, datetime | None]) -> None:
    for job_id in EVERY_SECOND:
        # Every fire from where django-apscheduler left off has one row, one second apart: the
        # same trigger goes on, and the fires due during the switch are recorded as missed.
        moments = scheduled_times(job_id)
        first = old_jobs[job_id]
        assert first is not None
        assert moments == [first + timedelta(seconds=n) for n in range(len(moments))]
    # The fire due as the runner stops may be recorded interrupted; only that last one.
    stopped = Execution.objects.filter(
        status="interrupted", exception__startswith="Interrupted: the scheduler stopped"
    )
    for job_id in EVERY_SECOND:
        assert set(stopped.filter(job_id=job_id).values_list("scheduled_at", flat=True)) <= {
            scheduled_times(job_id)[-1]
        }
    my_job = Execution.objects.filter(job_id="my_job", origin="schedule").exclude(pk__in=stopped)
    assert set(my_job.values_list("status", flat=True)) <= {"succeeded", "missed"}
    failures = (
        Execution.objects.filter(job_id="failing_job", origin="schedule")
        .exclude(status="missed")
        .exclude(pk__in=stopped)
    )
    assert {(run.status, run.exception) for run in failures} == {
        ("failed", "RuntimeError: the legacy job fails on purpose")
    }
    assert new_statuses("paused_job") == new_statuses("delete_old_job_executions") == []


def test_a_django_apscheduler_site_keeps_its_jobs_and_history_when_it_installs_this_app(
    site_without_our_app: None, client: Client, django_assert_max_num_queries: Any
) -> None:
    run_django_apscheduler_as_its_readme_shows()
    old_history = stock_history()
    old_jobs = dict(DjangoJob.objects.values_list("id", "next_run_time"))
    assert set(old_jobs) == OLD_JOBS
    assert old_jobs["paused_job"] is None
    assert {"Executed", "Error!"} <= {row["status"] for row in old_history}

    # The site installs this app.
    call_command("migrate", verbosity=0)

    assert_history_imported(old_history)
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", None))
    assert_history_in_admin(client, django_assert_max_num_queries)
    assert_jobs_in_admin(client, django_assert_max_num_queries)
    assert_imported_runs_summarised(client)

    # Its operators stop the old command and start ours, which takes the old jobs over.
    runner = Runner(threads=4)
    runner.start()
    try:
        wait_for(
            lambda: new_runs("my_job", "succeeded") >= 3 and new_runs("failing_job", "failed") >= 3,
            timeout=30,
        )
    finally:
        runner.stop(timeout=5)

    assert_old_jobs_ran_on_their_schedule(old_jobs)
    jobs_now = dict(DjangoJob.objects.values_list("id", "next_run_time"))
    assert set(jobs_now) >= OLD_JOBS
    assert jobs_now["paused_job"] is None
    assert jobs_now["delete_old_job_executions"] == old_jobs["delete_old_job_executions"]
    assert stock_history() == old_history

    # With more rows now, the admin lists cost what they cost before and say the same.
    with django_assert_max_num_queries(5):
        page = client.get(EXECUTIONS).text
    newest = Execution.objects.filter(origin="schedule").first()
    assert newest is not None
    changelist_row(page, execution_url(newest))
    assert_jobs_in_admin(client, django_assert_max_num_queries)
