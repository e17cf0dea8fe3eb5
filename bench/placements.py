"""Executions per second by placement: the scheduler's threads, its process pool, and 1, 2 and 4
task workers (django-tasks-db's ``db_worker``), on PostgreSQL.

    python -m bench.placements [--jobs 400] [--work-ms 0,20] [--database-url postgres://…/bench_placements]

For each placement a fresh ``runscheduler`` (and the workers) start with ``--jobs`` one-off jobs
all due at the same moment, each doing ``--work-ms`` of CPU-bound Python; the figure is runs
finished per second from that moment to the last outcome on disk, as the history records it.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "bench.placement_settings"
START_MARGIN = 8.0  # seconds between starting the processes and the jobs' moment


@dataclass(frozen=True)
class Placement:
    label: str
    runs_in: str
    workers: int = 0


PLACEMENTS = [
    Placement("scheduler threads", "threads"),
    Placement("scheduler process pool", "processes"),
    Placement("1 task worker", "tasks", 1),
    Placement("2 task workers", "tasks", 2),
    Placement("4 task workers", "tasks", 4),
]


@dataclass(frozen=True)
class Result:
    placement: Placement
    runs: int
    succeeded: int
    seconds: float
    start_lateness_p50: float

    @property
    def per_second(self) -> float:
        return self.runs / self.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400, help="runs due at once (default: %(default)s)")
    parser.add_argument(
        "--work-ms",
        type=lambda value: [float(part) for part in value.split(",")],
        default=[0.0, 20.0],
        help="CPU time per run, one table each (default: 0,20: the cost of a run alone, then CPU-bound)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_PLACEMENTS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_placements"
        ),
    )
    options = parser.parse_args(argv)
    create_database(options.database_url)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, "DATABASE_URL": options.database_url}
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    import django

    django.setup()
    for work_ms in options.work_ms:
        results = [measure(placement, options.jobs, work_ms, env) for placement in PLACEMENTS]
        print(report(results, options.jobs, work_ms), end="\n\n", flush=True)


def create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def measure(placement: Placement, jobs: int, work_ms: float, env: dict[str, str]) -> Result:
    from django.utils import timezone

    from scheduling.models import Execution

    clear_tables()
    due = timezone.now() + timedelta(seconds=START_MARGIN)
    job_env = {
        **env,
        "BENCH_DUE": due.isoformat(),
        "BENCH_JOBS": str(jobs),
        "BENCH_RUNS_IN": placement.runs_in,
        "BENCH_WORK_LOOPS": str(calibrated_loops(work_ms)),
    }
    commands = [["runscheduler", "-v", "0"]] + [
        [
            "db_worker",
            "--interval",
            "0.05",
            "--no-startup-delay",
            "--no-reload",
            "-v",
            "0",
            "--worker-id",
            f"w{n}",
        ]
        for n in range(placement.workers)
    ]
    with running(commands, job_env):
        finished = Execution.objects.exclude(status__in=["enqueued", "running"])
        deadline = time.monotonic() + START_MARGIN + 600
        while finished.count() < jobs:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{placement.label}: only {finished.count()} of {jobs} runs finished in time"
                )
            time.sleep(0.2)
    rows = list(Execution.objects.values_list("status", "scheduled_at", "started_at", "finished_at"))
    last: datetime = max(row[3] for row in rows if row[3] is not None)
    lateness = [(started - scheduled).total_seconds() for _, scheduled, started, _ in rows if started]
    return Result(
        placement,
        runs=len(rows),
        succeeded=sum(status == "succeeded" for status, *_ in rows),
        seconds=(last - due).total_seconds(),
        start_lateness_p50=statistics.median(lateness) if lateness else float("nan"),
    )


def calibrated_loops(work_ms: float) -> int:
    """Iterations of the benchmark job's loop that take ``work_ms`` on one core of this machine."""
    from bench.placement_jobs import work

    if work_ms <= 0:
        return 0
    loops = 100_000
    started = time.perf_counter()
    work(loops)
    return max(1, round(loops * work_ms / 1000 / (time.perf_counter() - started)))


def clear_tables() -> None:
    from django.db import connection

    tables = [
        "scheduling_execution",
        "scheduling_scheduledjob",
        "scheduling_runrequest",
        "django_apscheduler_djangojobexecution",
        "django_apscheduler_djangojob",
        "django_tasks_database_dbtaskresult",
    ]
    with connection.cursor() as cursor:
        existing = set(connection.introspection.table_names(cursor))
        cursor.execute(f"TRUNCATE {', '.join(table for table in tables if table in existing)} CASCADE")


@contextmanager
def running(commands: list[list[str]], env: dict[str, str]) -> Iterator[None]:
    processes = [
        subprocess.Popen([sys.executable, "manage.py", *command], cwd=ROOT, env=env)  # noqa: S603 (our own command lines)
        for command in commands
    ]
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def report(results: list[Result], jobs: int, work_ms: float) -> str:
    baseline = results[0].per_second
    lines = [
        f"{jobs} runs due at once, {work_ms:g} ms of CPU-bound Python each, on {os.cpu_count()} CPU(s):",
        "",
        "| placement | runs succeeded | seconds to last outcome | executions/s | vs threads | queued p50 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        lines.append(
            f"| {result.placement.label} | {result.succeeded}/{result.runs} | {result.seconds:.2f} | "
            f"{result.per_second:.0f} | {result.per_second / baseline:.2f}x | "
            f"{1000 * result.start_lateness_p50:.0f} ms |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
