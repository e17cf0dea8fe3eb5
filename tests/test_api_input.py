"""The HTTP API against hostile input: every answer a documented status with an error as
{error, code, field}, nothing stored, nothing written on a GET; pagination of jobs and runs."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import job
from scheduling.models import Execution, ScheduledJob
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs
from tests.test_api import API, bearer, user_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def steady(registry: dict) -> None:
    job(interval=300, id="steady")(jobs.succeed)
    sync(JobStore(), registry.values())


def raw_post(client: Client, path: str, body: str | bytes, **headers: str):
    return client.post(path, body, content_type="application/json", headers=headers)


GRACE = "misfire_grace_time must be a whole number of seconds from 1 to 2678400 (31 days), or none"
RESCHEDULE_REFUSED = [
    (
        '{"interval": 1, "misfire_grace_time": 100000000000000}',
        400,
        "out_of_range",
        "misfire_grace_time",
        GRACE,
    ),
    ('{"interval": 60, "jitter": 1000000000000000}', 400, "out_of_range", "jitter", "jitter must be"),
    ('{"interval": Infinity}', 400, "invalid_number", None, "Infinity is not a JSON number"),
    ('{"interval": {"seconds": NaN}}', 400, "invalid_number", None, "NaN is not a JSON number"),
    (
        '{"interval": {"weeks": 1e20}}',
        400,
        "out_of_range",
        "interval.weeks",
        "interval.weeks must be from 1 second",
    ),
    ('{"interval": 1e400}', 400, "invalid_number", None, "1e400 is too large a number"),
    (
        '{"date": "9999-12-31T23:59:59-23:59"}',
        400,
        "out_of_range",
        "date",
        "date must be a date and time from",
    ),
    (
        '{"interval": ' + "9" * 5000 + "}",
        400,
        "invalid_number",
        None,
        "An integer of 5000 digits is too long",
    ),
    (
        "[" * 100_000 + "]" * 100_000,
        413,
        "too_large",
        None,
        "The body may be at most 16384 bytes",
    ),
    (
        '{"a": ' * 2000 + "1" + "}" * 2000,
        400,
        "too_deep",
        None,
        "The JSON is nested more than 32 levels deep",
    ),
    (
        '{"cron": "' + ",".join(["1"] * 5000) + ' * * * *"}',
        400,
        "too_long",
        "cron",
        "cron must be text of at most",
    ),
    (
        '{"cron": {"minute": "' + "1," * 100 + '1"}}',
        400,
        "too_long",
        "cron.minute",
        "cron.minute must be text",
    ),
    ('{"max_instances": 1.5}', 400, "invalid_type", "max_instances", "max_instances must be a whole number"),
    ('{"interval": 60, "timezone": 5}', 400, "invalid_type", "timezone", "timezone must be text"),
    (b'{"cron": "\xff"}', 400, "invalid_json", None, "The JSON is not UTF-8"),
]


@pytest.mark.parametrize(("body", "status", "code", "field", "error"), RESCHEDULE_REFUSED)
def test_hostile_reschedule_bodies_get_a_json_4xx_and_change_nothing(
    client: Client, steady: None, body: str | bytes, status: int, code: str, field: str | None, error: str
) -> None:
    before = DjangoJob.objects.get(id="steady").job_state

    response = raw_post(
        client, f"{API}/jobs/steady/reschedule/", body, **bearer(user_with("change_schedule"))
    )

    assert response.status_code == status, response.content[:300]
    answer = response.json()
    assert (answer["code"], answer["field"]) == (code, field), answer
    assert answer["error"].startswith(error), answer
    assert DjangoJob.objects.get(id="steady").job_state == before
    assert not LogEntry.objects.exists()


def test_a_body_announced_larger_than_the_limit_is_refused_before_it_is_read(
    client: Client, steady: None
) -> None:
    response = client.post(
        f"{API}/jobs/steady/reschedule/",
        "{}",
        content_type="application/json",
        headers={**bearer(user_with("change_schedule")), "Content-Length": str(10**9)},
    )

    assert (response.status_code, response.json()["code"]) == (413, "too_large")


def test_a_paused_job_refused_a_huge_jitter_resumes(client: Client, steady: None) -> None:
    headers = bearer(user_with("change_schedule", "pause_job", "view_job"))
    raw_post(client, f"{API}/jobs/steady/pause/", "", **headers)

    refused = raw_post(
        client, f"{API}/jobs/steady/reschedule/", '{"interval": 60, "jitter": 1e15}', **headers
    )
    resumed = raw_post(client, f"{API}/jobs/steady/resume/", "", **headers)

    assert (refused.status_code, refused.json()["field"]) == (400, "jitter")
    assert (resumed.status_code, resumed.json()["state"]) == (200, "scheduled")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("runs=²", "invalid_number"),
        ("runs=" + "9" * 5000, "invalid_number"),
        ("runs=101", "out_of_range"),
        ("runs=-1", "invalid_number"),
        ("runs=1.0", "invalid_number"),
    ],
)
def test_numbers_in_the_query_are_parsed_strictly(
    client: Client, steady: None, query: str, code: str
) -> None:
    response = client.get(f"{API}/jobs/steady/?{query}", headers=bearer(user_with("view_job")))

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, "runs")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "out_of_range"),
        ("limit=501", "out_of_range"),
        ("limit=" + "5" * 99, "invalid_number"),
        ("limit=²", "invalid_number"),
        ("cursor=***", "invalid_cursor"),
        ("cursor=", "invalid_cursor"),
        ("cursor=" + "A" * 401, "invalid_cursor"),
        ("cursor=_w", "invalid_cursor"),
    ],
)
def test_bad_page_parameters_are_a_400(client: Client, steady: None, query: str, code: str) -> None:
    response = client.get(f"{API}/jobs/?{query}", headers=bearer(user_with("view_job")))

    assert (response.status_code, response.json()["code"]) == (400, code)


def test_jobs_come_a_page_at_a_time_in_id_order_including_broken_ones(
    client: Client, registry: dict, django_assert_max_num_queries: Any
) -> None:
    for number in range(7):
        job(interval=60 + number, id=f"job-{number}")(jobs.succeed)
    sync(JobStore(), registry.values())
    ScheduledJob.objects.create(
        id="job-3b", source="code", func_ref="gone:f", import_error="ImportError: gone"
    )
    headers = bearer(user_with("view_job"))

    seen, url = [], f"{API}/jobs/?limit=3"
    while url:
        with django_assert_max_num_queries(7):
            page = client.get(url, headers=headers).json()
        seen.append([row["id"] for row in page["jobs"]])
        url = f"{API}/jobs/?limit=3&cursor={page['next']}" if page["next"] else ""

    assert seen == [["job-0", "job-1", "job-2"], ["job-3", "job-3b", "job-4"], ["job-5", "job-6"]]
    everything = client.get(f"{API}/jobs/", headers=headers).json()
    assert (len(everything["jobs"]), everything["next"]) == (8, None)
    assert everything["jobs"][4]["state"] == "broken: ImportError: gone"


def test_a_page_of_jobs_reads_a_page_from_each_table_not_every_id(client: Client, steady: None) -> None:
    """Unbounded, MariaDB gathered and sorted every id of both tables for each page (1 s with
    100,000 jobs). SQLite allows no LIMIT inside a UNION, and plans it without the need."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if not connection.features.supports_slicing_ordering_in_compound:
        pytest.skip(f"{connection.vendor} allows no LIMIT inside a UNION")
    with CaptureQueriesContext(connection) as queries:
        client.get(f"{API}/jobs/?limit=3", headers=bearer(user_with("view_job")))

    (union,) = [query["sql"] for query in queries.captured_queries if " UNION " in query["sql"]]
    assert union.count("LIMIT") == 3, union


def test_a_get_never_writes_even_for_a_job_that_cannot_be_loaded(client: Client, steady: None) -> None:
    row = DjangoJob.objects.get(id="steady")
    row.job_state = row.job_state.replace(b"tests.support.jobs", b"tests.support.gone")
    row.save()
    headers = bearer(user_with("view_job"))

    listed = client.get(f"{API}/jobs/", headers=headers).json()["jobs"]
    shown = client.get(f"{API}/jobs/steady/", headers=headers).json()

    assert listed[0]["state"].startswith("broken: ")
    assert shown["state"].startswith("broken: ")
    assert not ScheduledJob.objects.get(id="steady").import_error  # the scheduler flags it, not a GET


def test_runs_have_a_resource_of_their_own_newest_first(client: Client, steady: None) -> None:
    for minutes in range(5):
        Execution.objects.create(
            job_id="steady" if minutes % 2 else "other",
            status="succeeded",
            scheduled_at=timezone.now() - timedelta(minutes=minutes),
        )
    headers = bearer(user_with("view_job"))
    ids = list(Execution.objects.order_by("-id").values_list("id", flat=True))

    first = client.get(f"{API}/runs/?limit=2", headers=headers).json()
    second = client.get(f"{API}/runs/?limit=2&cursor={first['next']}", headers=headers).json()
    steady_runs = client.get(f"{API}/runs/?job=steady", headers=headers).json()
    one = client.get(f"{API}/runs/{ids[0]}/", headers=headers)
    missing = client.get(f"{API}/runs/{10**30}/", headers=headers)
    not_a_number = client.get(f"{API}/runs/null,null/", headers=headers)
    empty_job = client.get(f"{API}/runs/?job=", headers=headers)

    assert [run["id"] for run in first["runs"] + second["runs"]] == ids[:4]
    assert [run["id"] for run in steady_runs["runs"]] == [
        run.pk for run in Execution.objects.filter(job_id="steady").order_by("-id")
    ]
    assert steady_runs["next"] is None
    assert (one.status_code, one.json()["id"], one.json()["job"]) == (
        200,
        ids[0],
        Execution.objects.get(pk=ids[0]).job_id,
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_run")
    assert (not_a_number.status_code, not_a_number.json()["code"]) == (404, "not_found")
    assert (empty_job.status_code, empty_job.json()["field"]) == (400, "job")


def test_a_job_id_with_a_newline_or_a_nul_gets_json_too(client: Client, steady: None) -> None:
    headers = bearer(user_with("view_job", "run_job"))

    newline = client.post(f"{API}/jobs/a%0Ab/run/", headers=headers)
    nul = client.get(f"{API}/jobs/a%00b/", headers=headers)
    anonymous = client.get(f"{API}/nowhere/")
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user_with("run_job", username="browser"))
    no_csrf = csrf_client.post(f"{API}/jobs/a%0Ab/run/")

    assert (newline.status_code, newline.json()["code"]) == (404, "not_found")
    assert (nul.status_code, nul.json()["code"], nul.json()["field"]) == (400, "invalid_text", "job_id")
    assert anonymous.status_code == 401
    assert (no_csrf.status_code, no_csrf.json()["code"]) == (403, "csrf_failed")


@pytest.mark.parametrize("encoded", ["a%09b", "a%1B%5B31m", "a%7F", "a%C2%85", "%E2%80%AEa", "a%E2%80%A8b"])
def test_a_job_id_with_a_control_character_is_refused_naming_it(
    client: Client, steady: None, encoded: str
) -> None:
    headers = bearer(user_with("view_job", "pause_job"))

    detail = client.get(f"{API}/jobs/{encoded}/", headers=headers)
    pause = client.post(f"{API}/jobs/{encoded}/pause/", headers=headers)
    runs = client.get(f"{API}/runs/?job={encoded}", headers=headers)

    for response, field in ((detail, "job_id"), (pause, "job_id"), (runs, "job")):
        assert (response.status_code, response.json()["code"], response.json()["field"]) == (
            400,
            "invalid_text",
            field,
        )
        assert "must not contain a control character" in response.json()["error"]


def test_pause_and_resume_show_the_job_only_to_users_who_may_view_it(client: Client, steady: None) -> None:
    blind = bearer(user_with("pause_job"))

    paused = raw_post(client, f"{API}/jobs/steady/pause/", "", **blind)

    assert paused.status_code == 200
    assert paused.json() == {"id": "steady", "result": "paused"}


def test_every_answer_of_the_api_is_json_even_a_server_error(
    client: Client, steady: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("scheduling.api.job_page", broken)

    response = client.get(f"{API}/jobs/", headers=bearer(user_with("view_job")))

    assert response.status_code == 500
    assert response.json() == {
        "error": "Internal error; it is logged on the server",
        "code": "internal_error",
        "field": None,
    }


def test_the_list_command_still_prints_every_job(registry: dict) -> None:
    for number in range(600):
        job(interval=60, id=f"job-{number:03}")(jobs.succeed)
    sync(JobStore(), registry.values())
    out = io.StringIO()

    call_command("scheduling", "list", "--json", stdout=out)

    assert len(json.loads(out.getvalue())["jobs"]) == 600
