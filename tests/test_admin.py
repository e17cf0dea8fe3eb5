"""The read-only admin pages answer, with a query count that does not grow with the rows."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from scheduling import job
from scheduling.models import Execution
from scheduling.store import JobStore
from scheduling.sync import sync
from tests import jobs

pytestmark = pytest.mark.django_db


def declare_jobs(registry: dict, count: int) -> None:
    for number in range(count):
        job(interval={"minutes": number + 1}, id=f"job-{number}")(jobs.succeed)
    sync(JobStore(), registry.values())


@pytest.mark.parametrize("count", [3, 30])
def test_the_jobs_list_shows_schedules_in_words_in_constant_queries(
    admin_client: Client, registry: dict, django_assert_num_queries, count: int
) -> None:
    declare_jobs(registry, count)

    with django_assert_num_queries(5):
        response = admin_client.get("/admin/scheduling/scheduledjob/")

    assert response.status_code == 200
    assert "Every 3 minutes" in response.text


@pytest.mark.parametrize("count", [3, 30])
def test_the_executions_list_answers_in_constant_queries(
    admin_client: Client, django_assert_num_queries, count: int
) -> None:
    Execution.objects.bulk_create(
        Execution(job_id="a", status="failed", scheduled_at=timezone.now() - timezone.timedelta(seconds=n))
        for n in range(count)
    )

    with django_assert_num_queries(6):
        response = admin_client.get("/admin/scheduling/execution/")

    assert response.status_code == 200


def test_django_apscheduler_admin_pages_that_ran_jobs_in_the_request_are_gone(admin_client: Client) -> None:
    assert admin_client.get("/admin/django_apscheduler/djangojob/").status_code == 404
