"""Runs placed on RQ and Celery workers: one scheduler, two real workers on a real broker.

The same proof as tests/test_scaling_out.py gives django-tasks-db: every fire recorded once and run
once, by a worker (its process on the row), failures with their tracebacks, and a run whose worker
was killed recorded interrupted after SCHEDULING_TASK_TIMEOUT. Each test uses a queue of its own
(a uuid in its name), so runs sharing a Redis or a RabbitMQ never take each other's tasks, and
empties it at the end.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection

from scheduling import control
from scheduling.models import Execution
from tests.conftest import SchedulerProcess, wait_for

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="run once, on PostgreSQL"),
]

RUNS = 200
TASK_TIMEOUT = 8  # SCHEDULING_TASK_TIMEOUT of the scheduler under test, in seconds
# Every second: 10 runs a second, half of what two RQ workers (a fork and a connection per run)
# got through on a 2-core machine, so that no run waits in the queue past TASK_TIMEOUT.
PLACED_JOBS = 10
JOB_MODULE = "tests.support.process_jobs_placements"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@dataclass(frozen=True)
class Broker:
    """A tasks backend, the packages it needs, its broker and how its workers start."""

    name: str
    modules: tuple[str, ...]
    needs: str  # why the modules may be missing, for the skip
    url: str

    def worker(self, queue: str, name: str) -> dict[str, Any]:
        """The options of ``scheduler_process`` that start one worker on ``queue``."""
        if self.name == "rq":
            return {
                "command": "rqworker",
                "args": ["--job-class", "django_tasks_rq.Job", "--name", name, queue],
                "started_text": "Listening on",
            }
        return {
            "program": ("-m", "celery", "-A", "tests.support.celery_app"),
            "command": "worker",
            # The default pool (prefork), one child: the run's row names the child, its parent the worker.
            "args": [
                *("--queues", queue, "--hostname", f"{name}@%h", "--concurrency", "1"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"),
            ],
            "started_text": " ready.",
        }

    def empty(self, queue: str, task_ids: list[str]) -> None:
        """Remove what the test left on the broker: its queue, registries, workers and tasks."""
        if self.name == "rq":
            import redis

            client = redis.Redis.from_url(self.url)
            keys = [*client.scan_iter(f"rq:*{queue}*")]
            keys += [f"rq:{kind}:{task_id}" for task_id in task_ids for kind in ("job", "results")]
            client.delete(*keys)
            return
        from kombu import Connection

        with Connection(self.url) as broker:
            broker.default_channel.queue_delete(queue)


BROKERS = {
    "rq": Broker("rq", ("django_tasks_rq", "django_rq", "rq"), "pip install django-tasks-rq", REDIS_URL),
    "celery": Broker(
        "celery",
        ("django_tasks_celery", "celery"),
        "django-tasks-celery 0.1 needs Python 3.12+ and Django 6 (pip install 'django-tasks-celery[celery]')",
        AMQP_URL,
    ),
}


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError:
        return False
    return True


def children_of(pids: set[int]) -> set[int]:
    """The processes whose parent is one of ``pids`` (RQ's work horses, Celery's pool children)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) in pids:
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> Broker:
    broker = BROKERS[request.param]
    missing = [module for module in broker.modules if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: {broker.needs}")
    if not reachable(broker.url) and os.environ.get("CI") != "true":
        pytest.skip(f"the {broker.name} broker at {urlsplit(broker.url).netloc} is unreachable")
    return broker


@pytest.fixture
def placed(
    broker: Broker, scheduler_process: Callable[..., SchedulerProcess], tmp_path: Path
) -> Iterator[Callable[..., SchedulerProcess]]:
    """Start the scheduler and workers of the test, all on its own queue; whatever happens, end the
    workers' children (which outlive a killed worker) before the fixture ends the workers."""
    queue = f"scheduling-test-{uuid.uuid4().hex}"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings_placements",
        "SCHEDULING_TEST_PLACEMENT": broker.name,
        "SCHEDULING_TEST_TASK_QUEUE": queue,
        "SCHEDULING_TEST_TASK_TIMEOUT": str(TASK_TIMEOUT),
        "TEST_JOB_COUNT": str(PLACED_JOBS),
        "TEST_MARK_FILE": str(tmp_path / "marks"),
    }
    started: list[SchedulerProcess] = []

    def start(worker: str | None = None) -> SchedulerProcess:
        options = broker.worker(queue, f"{worker}-{queue}") if worker else {}
        process = scheduler_process(JOB_MODULE, env=env, **options)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for child in children_of({process.popen.pid for process in started}):
            os.kill(child, signal.SIGKILL)
        for process in started:
            process.stop()
        broker.empty(
            queue, [task_id for task_id in Execution.objects.values_list("task_id", flat=True) if task_id]
        )


def test_runs_on_two_workers_are_each_recorded_once_and_a_killed_workers_run_is_interrupted(
    broker: Broker, placed: Callable[..., SchedulerProcess], figures, tmp_path: Path
) -> None:
    scheduler = placed()
    workers = [placed(f"worker-{number}") for number in (1, 2)]
    runs = Execution.objects.filter(job_id__in=[f"placed.{number}" for number in range(PLACED_JOBS)])

    wait_for(lambda: runs.count() >= RUNS, timeout=90, interval=0.2)
    for number in range(PLACED_JOBS):
        control.pause(f"placed.{number}")
    control.pause("placed.fails")
    fails = Execution.objects.filter(job_id="placed.fails")
    for some in (runs, fails):
        unfinished = some.filter(status__in=["enqueued", "running"])
        wait_for(lambda: not unfinished.exists(), timeout=60)  # noqa: B023  # called within the iteration

    rows = list(runs.values("job_id", "scheduled_at", "status", "hostname", "pid", "task_id", "ran_in"))
    assert len(rows) >= RUNS
    assert Counter(row["status"] for row in rows) == {"succeeded": len(rows)}
    assert {row["ran_in"] for row in rows} == {"tasks"}
    assert {row["hostname"] for row in rows} == {socket.gethostname()}
    assert all(row["task_id"] for row in rows)
    assert len({row["task_id"] for row in rows}) == len(rows)  # one task per fire
    # Each fire ran once, in a child of one of the two workers, the process its row names.
    marks = [line.split() for line in (tmp_path / "marks").read_text().splitlines()]
    fires = Counter(fire for fire, _, _ in marks)
    assert max(fires.values()) == 1
    assert set(fires) == {f"{row['job_id']}@{row['scheduled_at'].isoformat()}" for row in rows}
    ran_by = {fire: int(pid) for fire, pid, _ in marks}
    assert all(ran_by[f"{row['job_id']}@{row['scheduled_at'].isoformat()}"] == row["pid"] for row in rows)
    worker_pids = {worker.popen.pid for worker in workers}
    by_worker = Counter(int(parent) for _, _, parent in marks)
    assert set(by_worker) == worker_pids  # both workers used, nothing else ran them
    assert scheduler.popen.pid not in {row["pid"] for row in rows}

    failed = fails.filter(status="failed")
    assert failed.exists()
    # On a busy machine a fire may find the previous one still queued (skipped).
    assert not fails.exclude(status__in=["failed", "skipped"]).exists()
    assert all('raise ValueError("this job fails on purpose")' in row.traceback for row in failed)

    # The worker that takes the slow run is killed, with the child running it: a lost machine.
    control.run_now("placed.slow", requested_by="test")
    slow = wait_for(
        lambda: Execution.objects.filter(job_id="placed.slow", status="running").first(), timeout=30
    )
    [doomed] = [worker for worker in workers if slow.pid in children_of({worker.popen.pid})]
    doomed.signal(signal.SIGKILL)
    os.kill(slow.pid, signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()

    wait_for(
        lambda: Execution.objects.filter(pk=slow.pk, status="interrupted").exists(), timeout=TASK_TIMEOUT + 30
    )
    noticed_after = time.monotonic() - killed_at
    slow.refresh_from_db()
    assert f"sent no outcome within {TASK_TIMEOUT} s" in slow.exception
    figures(
        f"Placement on {broker.name} (PostgreSQL): {len(rows)} runs of {PLACED_JOBS} jobs over 2 workers "
        f"({', '.join(str(count) for count in sorted(by_worker.values()))} each), all succeeded once; "
        f"{failed.count()} failures with tracebacks; a SIGKILLed worker's run recorded interrupted "
        f"{noticed_after:.1f} s later (timeout {TASK_TIMEOUT} s)"
    )
