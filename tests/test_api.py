"""The HTTP API: authentication by session or token, the admin's permissions, CSRF, clear 4xx errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import job, tokens
from scheduling.models import ApiToken, Execution, RunRequest, ScheduledJob
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs

API = "/scheduling/api"


@pytest.fixture
def declared(registry: dict) -> None:
    job(cron="0 3 * * *", id="nightly", name="Nightly report")(jobs.succeed)
    job(interval={"minutes": 5}, id="reports/weekly")(jobs.succeed)
    sync(JobStore(), registry.values())


def user_with(*permissions: str, username: str = "deployer") -> User:
    user = User.objects.create_user(username, password="pw")
    for codename in permissions:
        permission = Permission.objects.get(codename=codename, content_type__app_label="scheduling")
        user.user_permissions.add(permission)
    return user


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(user, 'test')[1]}"}


def post(client: Client, path: str, body: Any = None, **headers: str):
    return client.post(path, json.dumps(body or {}), content_type="application/json", headers=headers)


pytestmark = pytest.mark.django_db


def test_a_token_lists_the_jobs_with_schedules_in_words(client: Client, declared: None) -> None:
    response = client.get(f"{API}/jobs/", headers=bearer(user_with("view_job")))

    assert response.status_code == 200
    assert {row["id"]: row["schedule"] for row in response.json()["jobs"]} == {
        "nightly": "At 03:00, every day",
        "reports/weekly": "Every 5 minutes",
    }
    assert response["Cache-Control"].startswith("max-age=0")


def test_listing_costs_the_same_queries_for_3_and_30_jobs(
    client: Client, registry: dict, django_assert_max_num_queries
) -> None:
    headers = bearer(user_with("view_job"))
    for count in (3, 30):
        for number in range(count):
            job(interval={"minutes": number + 1}, id=f"job-{number}")(jobs.succeed)
        sync(JobStore(), registry.values())
        with django_assert_max_num_queries(7):
            assert len(client.get(f"{API}/jobs/", headers=headers).json()["jobs"]) == count


def test_show_gives_a_job_with_its_recent_runs_and_ids_may_contain_slashes(
    client: Client, declared: None
) -> None:
    for minutes in range(3):
        Execution.objects.create(
            job_id="reports/weekly",
            status="failed",
            scheduled_at=timezone.now() - timedelta(minutes=minutes),
            exception="ValueError: no data",
        )

    response = client.get(f"{API}/jobs/reports/weekly/?runs=2", headers=bearer(user_with("view_job")))

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["state"]) == ("reports/weekly", "scheduled")
    assert [run["exception"] for run in body["runs"]] == ["ValueError: no data"] * 2


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, "Log in, or send 'Authorization: Bearer <API token>'"),
        ("Bearer sch_not-a-real-key", "Unknown or revoked API token, or its user is deactivated"),
        ("Basic ZGVwbG95ZXI6cHc=", "The Authorization header must be 'Bearer <API token>'"),
    ],
)
def test_requests_without_valid_credentials_get_401(
    client: Client, declared: None, header: str | None, error: str
) -> None:
    headers = {"Authorization": header} if header else {}

    response = client.get(f"{API}/jobs/", headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": error, "code": "not_authenticated", "field": None}
    assert response["WWW-Authenticate"] == 'Bearer realm="scheduling"'


def test_a_revoked_token_or_a_deactivated_user_loses_access(client: Client, declared: None) -> None:
    user = user_with("view_job")
    headers = bearer(user)
    assert client.get(f"{API}/jobs/", headers=headers).status_code == 200

    user.is_active = False
    user.save()
    assert client.get(f"{API}/jobs/", headers=headers).status_code == 401

    user.is_active = True
    user.save()
    ApiToken.objects.all().delete()
    assert client.get(f"{API}/jobs/", headers=headers).status_code == 401


def test_each_action_needs_the_admins_permission_for_it(client: Client, declared: None) -> None:
    headers = bearer(user_with("view_job"))

    for action, permission in [
        ("run", "run_job"),
        ("pause", "pause_job"),
        ("resume", "pause_job"),
        ("reschedule", "change_schedule"),
    ]:
        response = post(client, f"{API}/jobs/nightly/{action}/", {"cron": "5 * * * *"}, **headers)
        assert response.status_code == 403
        assert response.json() == {
            "error": f"This needs the permission 'scheduling.{permission}'",
            "code": "permission_denied",
            "field": None,
        }
    assert RunRequest.objects.count() == 0
    assert client.get(f"{API}/jobs/", headers=bearer(user_with(username="nobody"))).status_code == 403


def test_run_now_records_a_request_for_the_scheduler_and_returns_at_once(
    client: Client, declared: None
) -> None:
    response = post(client, f"{API}/jobs/nightly/run/", **bearer(user_with("run_job")))

    assert response.status_code == 202
    assert response.json() == {
        "job": "nightly",
        "result": "run requested",
        "warning": "No scheduler is running: the run starts when 'manage.py runscheduler' does.",
    }
    assert list(RunRequest.objects.values_list("job_id", "requested_by")) == [("nightly", "deployer")]
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.change_message) == ("nightly", "Requested a run now (API)")


def test_pause_and_resume_answer_with_the_jobs_new_state(client: Client, declared: None) -> None:
    headers = bearer(user_with("pause_job", "view_job"))

    paused = post(client, f"{API}/jobs/nightly/pause/", **headers)
    assert (paused.status_code, paused.json()["state"], paused.json()["next_run"]) == (200, "paused", None)
    assert DjangoJob.objects.get(id="nightly").next_run_time is None

    resumed = post(client, f"{API}/jobs/nightly/resume/", **headers)
    assert (resumed.status_code, resumed.json()["state"]) == (200, "scheduled")
    assert DjangoJob.objects.get(id="nightly").next_run_time is not None


def test_reschedule_changes_the_schedule_flags_it_and_audits_it(client: Client, declared: None) -> None:
    response = post(
        client,
        f"{API}/jobs/nightly/reschedule/",
        {"cron": "*/15 * * * *", "timezone": "Europe/Berlin", "max_instances": 2},
        **bearer(user_with("change_schedule", "view_job")),
    )

    assert response.status_code == 200, response.json()
    assert response.json()["schedule"] == "Every 15 minutes (Europe/Berlin)"
    assert response.json()["state"] == "scheduled, overridden outside the code"
    assert JobStore().lookup_job("nightly").max_instances == 2
    assert ScheduledJob.objects.get(id="nightly").overridden_at is not None
    message = LogEntry.objects.get().change_message
    assert message.startswith("Changed the schedule from “At 03:00, every day; max instances 1")
    assert "to “Every 15 minutes (Europe/Berlin); max instances 2" in message


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"cron": "61 * * * *"}, "Invalid schedule: invalid cron expression '61 * * * *'"),
        ({"cron": "0 0 31 4,6 *"}, "Invalid schedule: this cron schedule never fires"),
        ({"interval": {"fortnights": 1}}, "unknown interval unit 'fortnights'; known: weeks, days"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "Invalid schedule: unknown timezone 'Mars/"),
        ({"date": "2001-01-01T00:00:00+00:00"}, "date '2001-01-01T00:00:00+00:00' is not in the future"),
        ({"cron": "0 3 * * *", "interval": 60}, "Give exactly one of cron, interval or date"),
        ({"timezone": "UTC"}, "Give exactly one of cron, interval or date"),
        (
            {"crontab": "0 3 * * *"},
            "Unknown field(s): crontab; allowed: alert, calendars, coalesce, cron, date",
        ),
        ({"max_instances": 0}, "max_instances must be a whole number from 1 to 1000, not 0"),
        ({"coalesce": "yes"}, "coalesce must be true or false, not 'yes'"),
        ({}, "Nothing to change: give cron, interval or date, or job options"),
        ([1, 2], "The body must be a JSON object"),
    ],
)
def test_a_bad_reschedule_is_refused_with_a_400_that_names_the_problem_and_changes_nothing(
    client: Client, declared: None, body: Any, error: str
) -> None:
    before = DjangoJob.objects.get(id="nightly").job_state

    response = post(client, f"{API}/jobs/nightly/reschedule/", body, **bearer(user_with("change_schedule")))

    assert response.status_code == 400
    assert response.json()["error"].startswith(error), response.json()
    assert DjangoJob.objects.get(id="nightly").job_state == before
    assert not LogEntry.objects.exists()


def test_malformed_json_is_a_400(client: Client, declared: None) -> None:
    response = client.post(
        f"{API}/jobs/nightly/reschedule/",
        "{cron:",
        content_type="application/json",
        headers=bearer(user_with("change_schedule")),
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("The body is not valid JSON")


def test_unknown_jobs_are_404_and_the_wrong_method_is_405(client: Client, declared: None) -> None:
    headers = bearer(user_with("view_job", "run_job", "pause_job", "change_schedule"))

    for response in [
        client.get(f"{API}/jobs/nope/", headers=headers),
        post(client, f"{API}/jobs/nope/run/", **headers),
        post(client, f"{API}/jobs/nope/pause/", **headers),
        post(client, f"{API}/jobs/nope/reschedule/", {"cron": "0 4 * * *"}, **headers),
    ]:
        assert (response.status_code, response.json()) == (
            404,
            {"error": "No stored job with id 'nope'", "code": "unknown_job", "field": None},
        )

    response = client.get(f"{API}/jobs/nightly/run/", headers=headers)
    assert (response.status_code, response["Allow"]) == (405, "POST")
    assert client.get(f"{API}/jobs/?runs=x", headers=headers).status_code == 200  # the list has no runs
    assert client.get(f"{API}/jobs/nightly/?runs=0", headers=headers).status_code == 400


def test_a_job_whose_function_vanished_is_a_409_naming_the_error(client: Client, declared: None) -> None:
    headers = bearer(user_with("view_job", "pause_job"))
    row = DjangoJob.objects.get(id="nightly")
    row.job_state = row.job_state.replace(b"tests.support.jobs", b"tests.support.gone")
    row.save()

    response = post(client, f"{API}/jobs/nightly/pause/", **headers)

    assert response.status_code == 409
    assert response.json()["error"].startswith("Job 'nightly' cannot be loaded: ")
    assert "tests.support.gone" in response.json()["error"]


def test_a_session_needs_a_csrf_token_to_post_like_any_form(declared: None) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_with("view_job", "run_job"))
    assert client.get(f"{API}/jobs/").status_code == 200

    refused = client.post(f"{API}/jobs/nightly/run/")
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("CSRF check failed: CSRF cookie not set")
    assert not RunRequest.objects.exists()

    client.get("/admin/login/")  # sets the CSRF cookie, as any page with a form does
    token = client.cookies["csrftoken"].value
    accepted = client.post(f"{API}/jobs/nightly/run/", headers={"X-CSRFToken": token})
    assert accepted.status_code == 202
    assert RunRequest.objects.get().requested_by == "deployer"


def test_status_tells_whether_a_scheduler_is_running(client: Client, declared: None) -> None:
    response = client.get(f"{API}/status/", headers=bearer(user_with("view_job")))

    assert response.status_code == 200
    assert response.json()["alive"] is False
    assert response.json()["jobs"] == {"scheduled": 2, "paused": 0, "broken": 0}


def test_status_counts_broken_jobs_apart_from_scheduled_and_paused_ones(
    client: Client, registry: dict
) -> None:
    for number in range(4):
        job(interval={"minutes": 5}, id=f"job-{number}")(jobs.succeed)
    sync(JobStore(), registry.values())
    DjangoJob.objects.filter(id__in=["job-2", "job-3"]).update(next_run_time=None)
    ScheduledJob.objects.filter(id__in=["job-1", "job-3"]).update(import_error="ImportError: gone")
    ScheduledJob.objects.create(id="gone", import_error="ImportError: gone")  # not in the store

    response = client.get(f"{API}/status/", headers=bearer(user_with("view_job")))

    assert response.json()["jobs"] == {"scheduled": 1, "paused": 1, "broken": 2}


@pytest.mark.processes
def test_a_deploy_script_runs_a_job_through_a_real_scheduler_over_http(
    scheduler_process, live_server, figures
) -> None:
    """What a deploy script does: POST with a token, the running scheduler runs the job."""
    scheduler_process("tests.support.process_jobs_idle")
    wait_for(lambda: DjangoJob.objects.filter(id="proc.hourly").exists())
    request = urllib.request.Request(
        f"{live_server.url}{API}/jobs/proc.hourly/run/", method="POST", headers=bearer(user_with("run_job"))
    )

    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        assert json.load(response) == {"job": "proc.hourly", "result": "run requested"}

    run = wait_for(
        lambda: Execution.objects.filter(job_id="proc.hourly", origin="manual", status="succeeded").first()
    )
    assert run.requested_by == "deployer"
    figures(f"API run now -> run started {(run.started_at - run.scheduled_at).total_seconds():.2f} s later")

    bad = urllib.request.Request(f"{live_server.url}{API}/jobs/", headers={"Authorization": "Bearer x"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)
    assert refused.value.code == 401


def test_an_admin_creates_a_token_and_sees_its_key_once(admin_client: Client, client: Client) -> None:
    user = user_with("view_job")

    page = admin_client.post("/admin/scheduling/apitoken/add/", {"user": user.pk, "name": "CI deploys"})

    assert page.status_code == 200
    key = page.content.decode().split("Authorization: Bearer ")[1].split("<")[0]
    assert client.get(f"{API}/jobs/", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    token = ApiToken.objects.get()
    listing = admin_client.get("/admin/scheduling/apitoken/").content.decode()
    assert "CI deploys" in listing
    assert key not in listing
    assert token.prefix in listing
    read_only = admin_client.get(f"/admin/scheduling/apitoken/{token.pk}/change/")
    assert read_only.status_code == 200
    assert key not in read_only.content.decode()


def test_the_admin_refuses_a_token_for_an_inactive_user(admin_client: Client) -> None:
    user = user_with("view_job")
    user.is_active = False
    user.save()

    page = admin_client.post("/admin/scheduling/apitoken/add/", {"user": user.pk, "name": "CI deploys"})

    assert page.status_code == 200
    assert "Select a valid choice" in page.content.decode()
    assert not ApiToken.objects.exists()


def test_staff_can_make_tokens_only_for_themselves(client: Client) -> None:
    boss = User.objects.create_superuser("boss", password="pw")
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken"]))
    tokens.create(boss, "boss's own")
    client.force_login(clerk)

    refused = client.post("/admin/scheduling/apitoken/add/", {"user": boss.pk, "name": "escalate"})
    assert refused.status_code == 200
    assert "Select a valid choice" in refused.content.decode()
    assert not ApiToken.objects.filter(name="escalate").exists()

    created = client.post("/admin/scheduling/apitoken/add/", {"user": clerk.pk, "name": "mine"})
    assert "Authorization: Bearer sch_" in created.content.decode()
    listing = client.get("/admin/scheduling/apitoken/").content.decode()
    assert "mine" in listing
    assert "boss&#x27;s own" not in listing
