"""Admin changelists of both systems, timed with many jobs and executions.

``python -m bench.admin_views --jobs N --executions M --out FILE``: fills the job store and both
history tables in bulk in the database (generate_series on PostgreSQL, the SEQUENCE engine on
MariaDB, a recursive CTE on SQLite: inserting 10,000,000 rows through the ORM would take hours),
then renders each changelist with Django's test client as a superuser. Ours: the Jobs and Executions lists;
stock: django-apscheduler's own ``DjangoJobAdmin`` and ``DjangoJobExecutionAdmin`` (bench/urls.py).

The API's first page of jobs and of runs (ours only) is timed the same way, at both sizes.

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
# Ours only (the stock setup has no API): a page of the jobs and of the runs, as the admin's session.
API = {"jobs": "/scheduling/api/jobs/", "runs": "/scheduling/api/runs/"}
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


CHUNK = 1_000_000  # rows per INSERT … SELECT: one statement of 10,000,000 rows outgrows MariaDB's undo log


def series(vendor: str, first: int, last: int, step: int = 1) -> tuple[str, str, str]:
    """SQL for a row source of n = first..last, and expressions for 'n * step seconds ago' and 'in
    an hour'. PostgreSQL: generate_series; MariaDB: its SEQUENCE engine's virtual tables (a
    recursive CTE stops at ``max_recursive_iterations``, 1,000 by default); SQLite: a recursive CTE."""
    if vendor == "postgresql":
        return (
            f"FROM generate_series({first}, {last}) AS seq(n)",
            f"now() - n * interval '{step} second'",
            "now() + interval '1 hour'",
        )
    if vendor == "mysql":
        return (
            f"FROM (SELECT seq AS n FROM seq_{first}_to_{last}) AS seq",  # noqa: S608
            f"UTC_TIMESTAMP(6) - INTERVAL (n * {step}) SECOND",
            "UTC_TIMESTAMP(6) + INTERVAL 1 HOUR",
        )
    return (
        f"FROM (WITH RECURSIVE seq(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM seq WHERE n < {last}) "  # noqa: S608
        "SELECT n FROM seq)",
        f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (n * {step}) || ' seconds')",
        "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 hour')",
    )


def chunks(count: int) -> list[tuple[int, int]]:
    return [(first, min(first + CHUNK - 1, count)) for first in range(1, count + 1, CHUNK)]


def job_id(vendor: str, number: str) -> str:
    """SQL for 'bench.<number>': MariaDB's ``||`` is OR unless sql_mode says otherwise."""
    return f"CONCAT('bench.', {number})" if vendor == "mysql" else f"'bench.' || ({number})"


def analyze(cursor: Any, vendor: str) -> None:
    if vendor == "mysql":
        cursor.execute(
            "ANALYZE TABLE django_apscheduler_djangojob, scheduling_execution, "
            "django_apscheduler_djangojobexecution"
        )
        cursor.fetchall()
    else:
        cursor.execute("ANALYZE")


def insert_jobs(cursor: Any, vendor: str, jobs: int) -> None:
    for first, last in chunks(jobs):
        source, _, later = series(vendor, first, last)
        cursor.execute(
            "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) "
            f"SELECT {job_id(vendor, 'n - 1')}, {later}, %s {source}",
            [job_state()],
        )


def plain_indexes(cursor: Any, vendor: str) -> list[tuple[str, str]]:
    """PostgreSQL: the history tables' indexes other than unique ones, by name and definition."""
    if vendor != "postgresql":
        return []
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
        "('scheduling_execution', 'django_apscheduler_djangojobexecution') "
        "AND indexdef NOT LIKE 'CREATE UNIQUE INDEX%%'"
    )
    return [(name, definition) for name, definition in cursor.fetchall()]


def fill(jobs: int, executions: int) -> None:
    """The store and both history tables at the given size. On PostgreSQL the history tables'
    plain indexes are dropped for the fill and built again after it: building each once is
    several times faster than keeping them all up to date row by row, and the tables end the
    same. The unique ones stay, so the rows are checked as the scheduler's would be."""
    from django.db import connection

    vendor = connection.vendor
    with connection.cursor() as cursor:
        insert_jobs(cursor, vendor, jobs)
        indexes = plain_indexes(cursor, vendor) if executions >= CHUNK else []
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for first, last in chunks(executions):
            source, ago, _ = series(vendor, first, last)
            cursor.execute(
                "INSERT INTO scheduling_execution (job_id, status, origin, requested_by, scheduled_at, "
                "started_at, finished_at, duration, exception, traceback, ran_in, task_id, hostname, pid, "
                "attempt, attempts, queued, cancel_requested_by) "
                f"SELECT {job_id(vendor, f'n % {jobs}')}, 'succeeded', 'schedule', '', {ago}, {ago}, {ago}, "
                f"0.01, '', '', 'threads', '', 'bench', 1, 1, 1, FALSE, '' {source}"
            )
            cursor.execute(
                "INSERT INTO django_apscheduler_djangojobexecution (job_id, status, run_time, duration, "
                f"finished) SELECT {job_id(vendor, f'n % {jobs}')}, 'Executed', {ago}, 0.01, 0 {source}"
            )
        if indexes:
            cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        analyze(cursor, vendor)


def fill_timeline(jobs: int, runs: int) -> None:
    """``jobs`` jobs and ``runs`` runs among them in the last 24 hours, a job's runs ``jobs * step``
    seconds apart: wider than a pixel of the axis (96 s) for 100 jobs and 10,000 runs."""
    from django.db import connection

    vendor = connection.vendor
    step = max(int(23 * 3600 / runs), 1)
    with connection.cursor() as cursor:
        insert_jobs(cursor, vendor, jobs)
        source, ago, _ = series(vendor, 1, runs, step)
        cursor.execute(
            "INSERT INTO scheduling_execution (job_id, status, origin, requested_by, scheduled_at, "
            "started_at, finished_at, duration, exception, traceback, ran_in, task_id, hostname, pid, "
            "attempt, attempts, queued, cancel_requested_by) "
            f"SELECT {job_id(vendor, f'n % {jobs}')}, {TIMELINE_STATUS}, 'schedule', '', {ago}, {ago}, "
            f"{ago}, 0.01, CASE WHEN n % 20 = 0 THEN 'ValueError: the bench failed this run' ELSE '' END, "
            f"'', 'threads', '', 'bench', 1, 1, 1, FALSE, '' {source}"
        )
        analyze(cursor, vendor)


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
    pages = {
        page: {"ours": render(client, ours), "stock": render(client, stock)}
        for page, (ours, stock) in PAGES.items()
    }
    return {**pages, **{f"api {page}": {"ours": render(client, url)} for page, url in API.items()}}


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
