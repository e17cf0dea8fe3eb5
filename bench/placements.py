"""Executions per second by placement: the scheduler's threads, its process pool, 1, 2 and 4
task workers (django-tasks-db's ``db_worker``), and 2 workers of RQ and of Celery, on PostgreSQL.

    python -m bench.placements [--jobs 400] [--work-ms 0,20] [--database-url postgres://…/bench_placements]

For each placement a fresh ``runscheduler`` (and the workers) start with ``--jobs`` one-off jobs
all due at the same moment, each doing ``--work-ms`` of CPU-bound Python; the figure is runs
finished per second from that moment to the last outcome on disk, as the history records it.
The RQ and Celery rows need their packages (django-tasks-rq; django-tasks-celery, Python 3.12+
and Django 6) and brokers (``REDIS_URL``, ``AMQP_URL``); without them they are left out, saying why.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.util import find_spec
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
    backend: str = "db"  # for tasks: django-tasks-db, "rq" or "celery" (bench/placement_settings.py)

    def worker(self, number: int, queue: str) -> list[str]:
        """The command line of one of its workers, on ``queue``."""
        if self.backend == "rq":
            return ["manage.py", "rqworker", "--job-class", "django_tasks_rq.Job", "-v", "0", queue]
        if self.backend == "celery":
            return [
                *("-m", "celery", "-A", "bench.celery_app", "worker", "--queues", queue),
                *("--hostname", f"w{number}-{queue}@%h", "--concurrency", "1", "--loglevel", "WARNING"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ]
        return [
            *("manage.py", "db_worker", "--interval", "0.05", "--no-startup-delay", "--no-reload"),
            *("-v", "0", "--worker-id", f"w{number}"),
        ]


PLACEMENTS = [
    Placement("scheduler threads", "threads"),
    Placement("scheduler process pool", "processes"),
    Placement("1 task worker", "tasks", 1),
    Placement("2 task workers", "tasks", 2),
    Placement("4 task workers", "tasks", 4),
    Placement("2 RQ workers", "tasks", 2, "rq"),
    Placement("2 Celery workers", "tasks", 2, "celery"),
]
# What each backend needs installed, and why it may not be.
NEEDS = {
    "rq": (("django_tasks_rq", "django_rq"), "pip install django-tasks-rq"),
    "celery": (("django_tasks_celery", "celery"), "django-tasks-celery needs Python 3.12+ and Django 6"),
}


def unavailable(placement: Placement) -> str | None:
    """Why ``placement`` cannot be measured here, or None."""
    modules, how = NEEDS.get(placement.backend, ((), ""))
    missing = [module for module in modules if find_spec(module) is None]
    return f"{placement.label}: not measured, {', '.join(missing)} missing ({how})" if missing else None


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
    parser.add_argument(
        "--only",
        type=lambda value: value.split(","),
        default=[],
        help="measure only the placements whose label contains one of these, e.g. RQ,Celery",
    )
    options = parser.parse_args(argv)
    create_database(options.database_url)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, "DATABASE_URL": options.database_url}
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    import django

    django.setup()
    chosen = [p for p in PLACEMENTS if not options.only or any(part in p.label for part in options.only)]
    placements = [placement for placement in chosen if not unavailable(placement)]
    for placement in chosen:
        if reason := unavailable(placement):
            print(reason, flush=True)
    for work_ms in options.work_ms:
        results = [measure(placement, options.jobs, work_ms, env) for placement in placements]
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
    # A queue of this measurement's own on a shared broker; django-tasks-db's is in this database.
    queue = f"bench-placements-{uuid.uuid4().hex}" if placement.backend != "db" else "default"
    job_env = {
        **env,
        "BENCH_DUE": due.isoformat(),
        "BENCH_JOBS": str(jobs),
        "BENCH_RUNS_IN": placement.runs_in,
        "BENCH_WORK_LOOPS": str(calibrated_loops(work_ms)),
        "BENCH_TASK_BACKEND": placement.backend,
        "BENCH_TASK_QUEUE": queue,
    }
    commands = [["manage.py", "runscheduler", "-v", "0"]] + [
        placement.worker(number, queue) for number in range(placement.workers)
    ]
    with running(commands, job_env, placement.backend, queue):
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
def running(commands: list[list[str]], env: dict[str, str], backend: str, queue: str) -> Iterator[None]:
    processes = [
        subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env)  # noqa: S603 (our own command lines)
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
        remove_queue(backend, queue)


def remove_queue(backend: str, queue: str) -> None:
    """Leave nothing of the measurement's queue on a shared broker (its runs have all finished)."""
    if backend == "rq":
        import redis

        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        if keys := list(client.scan_iter(f"rq:*{queue}*")):
            client.delete(*keys)
    elif backend == "celery":
        from kombu import Connection

        with Connection(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")) as broker:
            broker.default_channel.queue_delete(queue)


def report(results: list[Result], jobs: int, work_ms: float) -> str:
    baseline = results[0].per_second  # the threads, unless --only left them out
    lines = [
        f"{jobs} runs due at once, {work_ms:g} ms of CPU-bound Python each, on {os.cpu_count()} CPU(s):",
        "",
        "| placement | runs succeeded | seconds to last outcome | executions/s "
        f"| vs {results[0].placement.label} | queued p50 |",
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
