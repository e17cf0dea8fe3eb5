"""The admin timeline: every job a row, each run a mark, in a constant number of queries."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from scheduling import job
from scheduling.admin.timeline import SEVERITY, WINDOWS, Window
from scheduling.admin.timeline_svg import ticks
from scheduling.models import Execution
from scheduling.schedules import format_local
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs
from tests.test_admin import staff

pytestmark = pytest.mark.django_db

TIMELINE = "/admin/scheduling/job/timeline/"
Status = Execution.Status


def declare(registry: dict, count: int) -> None:
    for number in range(count):
        job(interval={"minutes": number + 1}, id=f"job-{number}", name=f"Job {number}")(jobs.succeed)
    sync(JobStore(), registry.values())


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def titles(page: str) -> list[str]:
    return [html.unescape(title) for title in re.findall(r"<rect [^>]*><title>(.*?)</title>", page)]


def test_each_run_is_a_mark_coloured_by_its_outcome_with_its_details_and_a_link(
    admin_client: Client, registry: dict
) -> None:
    declare(registry, 1)
    runs = {
        status: Execution.objects.create(
            job_id="job-0",
            status=status,
            # Ten minutes apart: a pixel of the 24-hour axis is 96 s, so each run has a mark of its own.
            scheduled_at=ago(minutes=10 * (number + 1)),
            duration=None if status in (Status.MISSED, Status.SKIPPED) else 1.25,
            exception=f"{status} message\nsecond line",
        )
        for number, status in enumerate(Status.values)
    }

    page = admin_client.get(TIMELINE).text

    for status, run in runs.items():
        assert f'href="/admin/scheduling/execution/{run.pk}/change/"><rect class="t-{status}" ' in page
    shown = titles(page)
    assert len(shown) == len(Status.values)
    failed = runs[Status.FAILED]
    assert f"Job 0 · {format_local(failed.scheduled_at)} · Failed · 1.250 s · failed message" in shown
    assert f"Job 0 · {format_local(runs[Status.MISSED].scheduled_at)} · Missed · missed message" in shown
    assert not any("second line" in title for title in shown)
    # Fires that did not run are short marks; runs are full height.
    assert re.search(r'class="t-skipped" y="10" width="2" height="8" x="\d+"', page)
    assert re.search(r'class="t-timed_out" y="3" width="2" height="14" x="\d+"', page)
    assert '<a href="/admin/scheduling/job/job-0/change/"><text class="t-label"' in page
    assert "11 runs in the window: 1 failed, 1 timed out," in " ".join(page.split())


def test_every_status_has_a_colour_and_a_legend_entry(admin_client: Client) -> None:
    page = admin_client.get(TIMELINE).text

    assert set(SEVERITY) == set(Status.values)
    legend = page[page.index('id="timeline-legend"') :]
    for status in Status.values:
        assert f'data-status="{status}"' in legend
        assert html.escape(str(Status(status).label)) in legend
        assert re.search(rf"\.t-{status}\{{fill:#[0-9a-f]{{6}}\}}", page)


def test_runs_closer_than_a_pixel_share_a_mark_linked_to_the_history_filtered_to_them(
    admin_client: Client, registry: dict
) -> None:
    declare(registry, 1)
    first = Execution.objects.create(job_id="job-0", status=Status.SUCCEEDED, scheduled_at=ago(minutes=30))
    Execution.objects.create(
        job_id="job-0", status=Status.FAILED, scheduled_at=first.scheduled_at + timedelta(seconds=20)
    )
    Execution.objects.create(job_id="job-0", status=Status.SUCCEEDED, scheduled_at=ago(hours=5))

    page = admin_client.get(TIMELINE).text

    shared = [title for title in titles(page) if "2 runs" in title]
    assert len(shared) == 1
    assert shared[0].endswith("2 runs: 1 failed, 1 succeeded")
    found = re.search(r'<a href="([^"]+)"><rect class="t-failed"', page)
    assert found is not None
    link = html.unescape(found.group(1))
    assert link.startswith("/admin/scheduling/execution/?")
    listed = admin_client.get(link)
    assert listed.status_code == 200
    assert listed.text.count('class="field-job_id"') == 2


@pytest.mark.parametrize(("job_count", "runs_per_job"), [(1, 1), (30, 40)])
def test_the_timeline_answers_in_the_same_number_of_queries_for_any_number_of_jobs_and_runs(
    registry: dict, django_assert_num_queries, job_count: int, runs_per_job: int
) -> None:
    declare(registry, job_count)
    statuses = Status.values
    Execution.objects.bulk_create(
        Execution(
            job_id=f"job-{number % job_count}",
            status=statuses[number % len(statuses)],
            scheduled_at=ago(seconds=30 * number + 1),
            duration=0.5,
        )
        for number in range(job_count * runs_per_job)
    )
    Execution.objects.create(job_id="gone", status=Status.SUCCEEDED, scheduled_at=ago(hours=1))
    client = staff("view_job")

    # Session, user, the user's permissions and groups' (each_context), the jobs, the runs.
    with django_assert_num_queries(6):
        response = client.get(TIMELINE)

    assert response.status_code == 200
    assert response.text.count('class="t-row"') == job_count + 1


def test_only_users_who_may_view_jobs_see_it(registry: dict) -> None:
    declare(registry, 1)

    assert staff().get(TIMELINE).status_code == 403
    User.objects.all().delete()
    assert staff("view_job").get(TIMELINE).status_code == 200
    anonymous = Client().get(TIMELINE)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")


def test_the_jobs_list_links_to_it(admin_client: Client) -> None:
    assert f'href="{TIMELINE}"' in admin_client.get("/admin/scheduling/job/").text


def test_the_window_is_the_last_24_hours_or_7_days(admin_client: Client, registry: dict) -> None:
    declare(registry, 1)
    recent = Execution.objects.create(job_id="job-0", status=Status.SUCCEEDED, scheduled_at=ago(hours=2))
    older = Execution.objects.create(job_id="job-0", status=Status.FAILED, scheduled_at=ago(days=3))
    Execution.objects.create(job_id="job-0", status=Status.FAILED, scheduled_at=ago(days=8))

    def marked(query: str) -> set[int]:
        page = admin_client.get(TIMELINE + query).text
        return {int(pk) for pk in re.findall(r"/admin/scheduling/execution/(\d+)/change/", page)}

    assert marked("") == {recent.pk}
    assert marked("?window=7d") == {recent.pk, older.pk}
    # Anything else is the default window, not an error.
    for query in ("?window=30d", "?window=", "?window=%00", "?window=7d&window=<b>"):
        response = admin_client.get(TIMELINE + query)
        assert response.status_code == 200
    assert marked("?window=30d") == {recent.pk}
    assert Window.of(None) is WINDOWS["24h"]


def test_a_job_filter_shows_that_jobs_row_only(admin_client: Client, registry: dict) -> None:
    declare(registry, 3)
    for number in range(3):
        Execution.objects.create(job_id=f"job-{number}", status=Status.SUCCEEDED, scheduled_at=ago(hours=1))

    page = admin_client.get(TIMELINE + "?job=job-1&window=7d").text

    assert re.findall(r'class="t-row" data-job="([^"]+)"', page) == ["job-1"]
    assert '<option value="job-1" selected>Job 1</option>' in page
    assert '<option value="7d" selected>' in page
    unknown = admin_client.get(TIMELINE + "?job=nope").text
    assert re.findall(r'class="t-row" data-job="([^"]+)"', unknown) == ["nope"]


def test_runs_of_jobs_no_longer_in_the_store_keep_a_row(admin_client: Client) -> None:
    Execution.objects.create(job_id="one.off", status=Status.SUCCEEDED, scheduled_at=ago(hours=1))

    page = admin_client.get(TIMELINE).text

    assert "one.off: no longer in the job store" in page


def test_job_names_and_messages_are_escaped(admin_client: Client) -> None:
    Execution.objects.create(
        job_id="<b>job</b>", status=Status.FAILED, scheduled_at=ago(hours=1), exception="<script>x</script>"
    )

    page = admin_client.get(TIMELINE).text

    assert "<script>x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>job</b>" not in page


@override_settings(TIME_ZONE="Europe/Paris")
def test_gridlines_fall_on_round_local_times_across_a_daylight_saving_change() -> None:
    # 2026-03-29: Paris moves from UTC+1 to UTC+2 at 02:00 local.
    end = datetime(2026, 3, 29, 12, 30, tzinfo=UTC)
    start = end - timedelta(hours=24)

    hours = [timezone.localtime(moment).strftime("%H:%M") for moment in ticks(start, end, timedelta(hours=3))]

    assert hours == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]


def test_a_status_this_version_does_not_know_is_still_drawn(admin_client: Client) -> None:
    # Written by a newer release during a rolling upgrade.
    Execution.objects.create(job_id="job-x", status="deferred", scheduled_at=ago(hours=1))

    page = admin_client.get(TIMELINE).text

    assert re.search(r'<rect class="t-skipped" [^>]*><title>job-x · [^<]* · deferred</title>', page)
