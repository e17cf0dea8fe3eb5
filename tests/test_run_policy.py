"""Run policies: options beyond APScheduler's, kept beside the job store and read with the due jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling import control, job, validation
from scheduling.declarations import JobDeclarationError
from scheduling.models import ScheduledJob
from scheduling.policy import RunPolicy
from scheduling.store import JobStore, policies_of
from scheduling.sync import sync
from tests.support import jobs

pytestmark = pytest.mark.django_db


def declare(registry: dict, **options: Any) -> None:
    job(id="report", interval={"minutes": 5}, **options)(jobs.succeed)


def test_a_declared_timeout_is_stored_with_the_job_and_read_with_the_due_jobs(registry: dict) -> None:
    declare(registry, timeout=300)
    store = JobStore()
    sync(store, registry.values())
    assert ScheduledJob.objects.get(id="report").run_policy == {"timeout": 300}
    later = timezone.now() + timedelta(minutes=6)
    with CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(later, 100)
    assert [scheduled.id for scheduled in due] == ["report"]
    assert len(queries) == 1  # the policy comes in the due query's own statement
    assert store.policy("report") == RunPolicy(timeout=300)
    assert store.policy("another") == RunPolicy()


def test_a_job_without_options_stores_an_empty_policy_and_keeps_its_fingerprint(registry: dict) -> None:
    declare(registry)
    declaration = registry["report"]
    assert declaration.policy == {}
    assert "policy" not in declaration.as_dict()  # declarations from before policies: no re-sync


@pytest.mark.parametrize("value", [0, -1, 31 * 86400 + 1, 1.5, "300", True])
def test_a_timeout_out_of_bounds_is_refused_naming_the_option(registry: dict, value: Any) -> None:
    with pytest.raises(JobDeclarationError, match="timeout"):
        declare(registry, timeout=value)
    with pytest.raises(validation.InputError, match="timeout"):
        validation.options({"timeout": value})


def test_changing_the_timeout_overrides_the_declaration_until_reset(registry: dict) -> None:
    declare(registry, timeout=300)
    sync(JobStore(), registry.values())
    control.change("report", timeout=60)
    scheduled_job = ScheduledJob.objects.get(id="report")
    assert scheduled_job.run_policy == {"timeout": 60}
    assert scheduled_job.overridden_at is not None
    sync(JobStore(), registry.values())  # a restart keeps the operator's change
    assert policies_of(["report"])["report"].timeout == 60
    control.change("report", timeout=None)
    assert ScheduledJob.objects.get(id="report").run_policy == {}
    control.reset("report")
    assert policies_of(["report"])["report"].timeout == 300


def test_a_job_added_outside_the_code_takes_a_timeout(registry: dict) -> None:
    control.add("added", "tests.support.jobs:succeed", schedule={"interval": {"minutes": 5}}, timeout=90)
    assert policies_of(["added", "unknown"]) == {"added": RunPolicy(timeout=90), "unknown": RunPolicy()}


def test_the_api_sets_and_shows_the_timeout(registry: dict, admin_client: Client) -> None:
    declare(registry)
    sync(JobStore(), registry.values())
    url = "/scheduling/api/jobs/report/"
    response = admin_client.post(url + "reschedule/", {"timeout": 120}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert admin_client.get(url).json()["timeout"] == 120
    response = admin_client.post(url + "reschedule/", {"timeout": 0}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == "timeout"


def test_the_admin_form_edits_the_timeout(registry: dict, admin_client: Client) -> None:
    declare(registry)
    sync(JobStore(), registry.values())
    url = "/admin/scheduling/job/report/change/"
    page = admin_client.get(url)
    assert b"Timeout (s)" in page.content
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(kind="interval", every=5, unit="minutes", timeout=45, coalesce="on")
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert policies_of(["report"])["report"].timeout == 45
