"""Admin changelists of both systems, timed with many jobs and executions.

``python -m bench.admin_views --jobs N --executions M --out FILE``: fills the job store and both
history tables in bulk in the database (generate_series on PostgreSQL, a recursive CTE on
SQLite: inserting 1,000,000 rows through the ORM would take minutes), then renders each
changelist with Django's test client as a superuser. Ours: the Jobs and Executions lists;
stock: django-apscheduler's own ``DjangoJobAdmin`` and ``DjangoJobExecutionAdmin`` (bench/urls.py).

Then the timeline (ours only: the stock admin has none) with ``--timeline-runs`` runs in its
24-hour window over ``--timeline-jobs`` jobs, spread so that no two runs of a job share a pixel:
every run is a mark of its own, the most markup the page can have for that many runs.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from typing import Any

import django

PAGES = {
    "jobs": ("/admin/scheduling/job/", "/stock-admin/django_apscheduler/djangojob/"),
    "executions": ("/admin/scheduling/execution/", "/stock-admin/django_apscheduler/djangojobexecution/"),
}
TIMELINE = "/admin/scheduling/job/timeline/"
RENDERS = 3  # timed renders per page, after one warm-up; the median is reported
# Outcomes of the timeline's runs, by n % 20: mostly successes, and each kind of trouble it shows.
TIMELINE_STATUS = (
    "CASE n % 20 WHEN 0 THEN 'failed' WHEN 1 THEN 'missed' WHEN 2 THEN 'skipped' "
    "WHEN 3 THEN 'timed_out' ELSE 'succeeded' END"
)


def job_state() -> bytes:
    from apscheduler.job import Job
    from apscheduler.triggers.interval import IntervalTrigger
    from django.utils import timezone

    from bench import jobs

    job = Job(
        None,
        id="bench.0",
        func=jobs.tick,
        trigger=IntervalTrigger(hours=1),
        executor="default",
        args=("bench.0",),
        kwargs={},
        name="tick",
        misfire_grace_time=60,
        coalesce=True,
        max_instances=1,
    )
    job.next_run_time = timezone.now()
    return pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)


def series(vendor: str, count: int, step: int = 1) -> tuple[str, str, str]:
    """SQL for a row source of n = 1..count, and expressions for 'n * step seconds ago' and 'in an
    hour'."""
    if vendor == "postgresql":
        return (
            f"FROM generate_series(1, {count}) AS seq(n)",
            f"now() - n * interval '{step} second'",
            "now() + interval '1 hour'",
        )
    return (
        f"FROM (WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count}) "  # noqa: S608
        "SELECT n FROM seq)",
        f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (n * {step}) || ' seconds')",
        "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 hour')",
    )


def fill(jobs: int, executions: int) -> None:
    from django.db import connection

    vendor = connection.vendor
    with connection.cursor() as cursor:
        source, ago, later = series(vendor, jobs)
        cursor.execute(
            "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) "
            f"SELECT 'bench.' || (n - 1), {later}, %s {source}",
            [job_state()],
        )
        source, ago, later = series(vendor, executions)
        cursor.execute(
            "INSERT INTO scheduling_execution (job_id, status, origin, requested_by, scheduled_at, "
            "started_at, finished_at, duration, exception, traceback, ran_in, task_id, hostname, pid, "
            "attempt, attempts, queued, cancel_requested_by) "
            f"SELECT 'bench.' || (n % {jobs}), 'succeeded', 'schedule', '', {ago}, {ago}, {ago}, 0.01, "
            f"'', '', 'threads', '', 'bench', 1, 1, 1, FALSE, '' {source}"
        )
        cursor.execute(
            "INSERT INTO django_apscheduler_djangojobexecution (job_id, status, run_time, duration, "
            f"finished) SELECT 'bench.' || (n % {jobs}), 'Executed', {ago}, 0.01, 0 {source}"
        )
        cursor.execute("ANALYZE")


def fill_timeline(jobs: int, runs: int) -> None:
    """``jobs`` jobs and ``runs`` runs among them in the last 24 hours, a job's runs ``jobs * step``
    seconds apart: wider than a pixel of the axis (96 s) for 100 jobs and 10,000 runs."""
    from django.db import connection

    step = max(int(23 * 3600 / runs), 1)
    with connection.cursor() as cursor:
        source, ago, later = series(connection.vendor, jobs)
        cursor.execute(
            "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) "
            f"SELECT 'bench.' || (n - 1), {later}, %s {source}",
            [job_state()],
        )
        source, ago, later = series(connection.vendor, runs, step)
        cursor.execute(
            "INSERT INTO scheduling_execution (job_id, status, origin, requested_by, scheduled_at, "
            "started_at, finished_at, duration, exception, traceback, ran_in, task_id, hostname, pid, "
            "attempt, attempts, queued, cancel_requested_by) "
            f"SELECT 'bench.' || (n % {jobs}), {TIMELINE_STATUS}, 'schedule', '', {ago}, {ago}, {ago}, "
            "0.01, CASE WHEN n % 20 = 0 THEN 'ValueError: the bench failed this run' ELSE '' END, '', "
            f"'threads', '', 'bench', 1, 1, 1, FALSE, '' {source}"
        )
        cursor.execute("ANALYZE")


def measure_timeline(client: Any, jobs: int, runs: int) -> dict[str, Any]:
    """The timeline at 10 jobs / 100 runs, then at ``jobs`` / ``runs``: render time, queries, size."""
    from bench import database

    result: dict[str, Any] = {}
    for size, (job_count, run_count) in {"small": (10, 100), "large": (jobs, runs)}.items():
        database.clear()
        fill_timeline(job_count, run_count)
        result[size] = {**render(client, TIMELINE), "kb": len(client.get(TIMELINE).content) / 1024}
    return result


def render(client: Any, url: str) -> dict[str, float | int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm-up: templates, caches
    timings = []
    for _ in range(RENDERS):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)  # noqa: S101
    return {"ms": statistics.median(timings) * 1000, "queries": len(queries)}


def measure_all(client: Any) -> dict[str, dict[str, Any]]:
    return {
        page: {"ours": render(client, ours), "stock": render(client, stock)}
        for page, (ours, stock) in PAGES.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--executions", type=int, required=True)
    parser.add_argument("--timeline-jobs", type=int, default=100)
    parser.add_argument("--timeline-runs", type=int, default=10000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from bench import database

    database.clear()
    User.objects.filter(username="bench").delete()
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "bench"))
    fill(10, 100)
    small = measure_all(client)
    database.clear()
    started = time.perf_counter()
    fill(args.jobs, args.executions)
    result = {"fill_seconds": time.perf_counter() - started, "small": small, "large": measure_all(client)}
    result["timeline"] = measure_timeline(client, args.timeline_jobs, args.timeline_runs)
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
