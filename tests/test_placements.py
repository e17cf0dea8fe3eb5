"""Runs placed on RQ and Celery workers: one scheduler, two real workers on a real broker.

The same proof as tests/test_scaling_out.py gives django-tasks-db: every fire recorded once and run
once, by a worker (its process on the row), failures with their tracebacks, a task delivered again
running nothing, and a run whose worker was killed recorded interrupted after
SCHEDULING_TASK_TIMEOUT. Each test uses a queue of its own (a uuid in its name), so runs sharing a
Redis or a RabbitMQ never take each other's tasks, and empties it at the end.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
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
from tests.conftest import ROOT, SchedulerProcess, subprocess_database_url, wait_for
from tests.support import spread

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


def read_marks(tmp_path: Path) -> list[list[str]]:
    """One line per run of a placed job: its fire, its process, that process's parent."""
    return [line.split() for line in (tmp_path / "marks").read_text().splitlines()]


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


class Placed:
    """The processes of one test, all on its own queue: a scheduler, workers, a task sent by hand."""

    def __init__(
        self, broker: Broker, scheduler_process: Callable[..., SchedulerProcess], marks: Path
    ) -> None:
        self.broker, self.scheduler_process = broker, scheduler_process
        self.queue = f"scheduling-test-{uuid.uuid4().hex}"
        self.env = {
            "DJANGO_SETTINGS_MODULE": "tests.settings_placements",
            "SCHEDULING_TEST_PLACEMENT": broker.name,
            "SCHEDULING_TEST_TASK_QUEUE": self.queue,
            "SCHEDULING_TEST_TASK_TIMEOUT": str(TASK_TIMEOUT),
            "TEST_JOB_COUNT": str(PLACED_JOBS),
            "TEST_MARK_FILE": str(marks),
        }
        self.started: list[SchedulerProcess] = []

    def start(self, worker: str | None = None) -> SchedulerProcess:
        """The scheduler, or with a name a worker."""
        options = self.broker.worker(self.queue, f"{worker}-{self.queue}") if worker else {}
        process = self.scheduler_process(JOB_MODULE, env=self.env, **options)
        self.started.append(process)
        return process

    def enqueue(self, execution_id: int) -> str:
        """Send the scheduler's task for ``execution_id`` as the scheduler does; the task's id."""
        code = (
            "from scheduling.runs.worker_task import run_scheduled_job; "
            f"print(run_scheduled_job.using(backend='placed', queue_name='{self.queue}')"
            f".enqueue({execution_id}).id)"
        )
        env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "SCHEDULING_TEST_MODULES": JOB_MODULE}
        sent = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env={**env, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return sent.stdout.split()[-1]

    def end(self) -> None:
        """End the workers' children (which outlive a killed worker), the processes, the queue."""
        for child in children_of({process.popen.pid for process in self.started}):
            os.kill(child, signal.SIGKILL)
        for process in self.started:
            process.stop()
        task_ids = [task_id for task_id in Execution.objects.values_list("task_id", flat=True) if task_id]
        self.broker.empty(self.queue, task_ids)


@pytest.fixture
def placed(
    broker: Broker, scheduler_process: Callable[..., SchedulerProcess], tmp_path: Path
) -> Iterator[Placed]:
    placed = Placed(broker, scheduler_process, tmp_path / "marks")
    try:
        yield placed
    finally:
        placed.end()


def test_runs_on_two_workers_are_each_recorded_once_and_a_killed_workers_run_is_interrupted(
    broker: Broker, placed: Placed, figures, tmp_path: Path
) -> None:
    scheduler = placed.start()
    workers = [placed.start(f"worker-{number}") for number in (1, 2)]
    runs = Execution.objects.filter(job_id__in=[f"placed.{number}" for number in range(PLACED_JOBS)])

    wait_for(lambda: runs.count() >= RUNS, timeout=90, interval=0.2)
    rows = spread.settle([f"placed.{number}" for number in range(PLACED_JOBS)], "placed.fails")
    fails = Execution.objects.filter(job_id="placed.fails")
    assert len(rows) >= RUNS
    # Each fire ran once, in a child of one of the two workers, the process its row names.
    marks = read_marks(tmp_path)
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

    # A task delivered again (a backend may) finds its run no longer enqueued, and runs nothing.
    again = runs.first()
    assert again is not None
    task_id = placed.enqueue(again.pk)
    wait_for(lambda: any(f"Task {task_id} not run" in worker.output() for worker in workers), timeout=30)
    assert Execution.objects.get(pk=again.pk).finished_at == again.finished_at
    assert Counter(fire for fire, _, _ in read_marks(tmp_path)) == fires

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
