"""Real runscheduler processes: signals, crashes, changes from other processes, deploys."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.triggers.date import DateTrigger
from django.db import connection
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control
from scheduling.models import Execution, ScheduledJob, SchedulerInstance
from scheduling.store import JobStore
from tests.conftest import ROOT, subprocess_database_url, wait_for
from tests.support import jobs
from tests.support.postgres_cluster import PostgresCluster, free_port

pytestmark = pytest.mark.processes

# How long the fault tests keep the load on (the two-scheduler test) and the database away.
FAULT_SECONDS = float(os.environ.get("SCHEDULING_FAULT_SECONDS", "60"))
OUTAGE_SECONDS = float(os.environ.get("SCHEDULING_OUTAGE_SECONDS", "30"))


def running(job_id: str) -> Execution | None:
    """A run going on: started, not only claimed ahead of its time (fire-ahead: no start yet)."""
    return Execution.objects.filter(job_id=job_id, status="running", started_at__isnull=False).first()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_waits_for_the_running_job_and_records_its_outcome(
    scheduler_process, figures, signum: int
) -> None:
    process = scheduler_process("tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "3"})
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signum)

    assert process.wait(timeout=30) == 0
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.duration >= 3
    assert Execution.objects.filter(status="running").count() == 0
    assert SchedulerInstance.objects.get(pid=process.popen.pid).stopped_at is not None
    figures(
        f"{signal.Signals(signum).name} mid-run: the run finished after {execution.duration:.2f} s, exit 0"
    )


def test_sigterm_past_the_shutdown_timeout_records_the_run_as_interrupted(scheduler_process) -> None:
    process = scheduler_process(
        "tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "60"}, args=["--shutdown-timeout", "0.5"]
    )
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signal.SIGTERM)

    assert process.wait(timeout=20) == 0
    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED
    assert "did not wait longer than 0.5 s" in execution.exception


def test_a_run_killed_with_sigkill_is_marked_interrupted_on_restart(scheduler_process) -> None:
    process = scheduler_process("tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "60"})
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signal.SIGKILL)
    process.wait(timeout=10)
    execution.refresh_from_db()
    assert execution.status == Execution.Status.RUNNING

    scheduler_process("tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "60"})

    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED


def test_changes_made_by_another_process_are_obeyed_within_a_second(scheduler_process, figures) -> None:
    scheduler_process("tests.support.process_jobs_idle")
    # The row of a run exists ("running") before it starts; its start and end are written after.
    finished = Execution.objects.exclude(status="running").order_by("scheduled_at")

    changed = timezone.now()
    control.reschedule("proc.hourly", interval={"seconds": 1})
    rescheduled = wait_for(lambda: finished.filter(job_id="proc.hourly").first(), timeout=10)

    store = JobStore()
    due = timezone.now() + timedelta(seconds=1)
    one_off = Job(
        None,
        id="one-off",
        func=jobs.succeed,
        trigger=DateTrigger(due),
        executor="default",
        args=(),
        kwargs={},
        name="one-off",
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
    )
    one_off.next_run_time = due
    store.add_job(one_off)
    added = wait_for(lambda: finished.filter(job_id="one-off").first(), timeout=10)

    requested = control.run_now("proc.hourly", requested_by="alice")
    manual = wait_for(lambda: finished.filter(origin="manual").first(), timeout=10)
    assert (manual.requested_by, manual.scheduled_at) == ("alice", requested.requested_at)

    lateness = [(e.started_at - e.scheduled_at).total_seconds() for e in (rescheduled, added, manual)]
    figures(
        f"changes from another process: rescheduled job first ran {lateness[0]:.3f} s late, "
        f"added one-off job {lateness[1]:.3f} s late, run-now request started {lateness[2]:.3f} s after it"
    )
    assert rescheduled.scheduled_at - changed <= timedelta(seconds=1.5)
    assert all(late < 1.0 for late in lateness)
    assert added.status == Execution.Status.SUCCEEDED
    # A finished one-off job leaves the store; its history stays.
    wait_for(lambda: not DjangoJob.objects.filter(id="one-off").exists(), timeout=5)
    assert Execution.objects.filter(job_id="one-off").count() == 1


def test_a_renamed_job_function_loses_nothing_and_resumes_when_it_returns(
    scheduler_process, tmp_path: Path
) -> None:
    module = tmp_path / "deployed_jobs.py"
    original = textwrap.dedent(
        """
        from scheduling import job

        @job(interval={"seconds": 1}, id="deployed")
        def original():
            pass
        """
    )
    module.write_text(original)
    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    process = scheduler_process("deployed_jobs", env=env)
    wait_for(lambda: Execution.objects.filter(job_id="deployed", status="succeeded").count() >= 2, timeout=15)
    process.signal(signal.SIGTERM)
    process.wait()
    history = Execution.objects.filter(job_id="deployed").count()

    module.write_text("def renamed():\n    pass\n")
    process = scheduler_process("deployed_jobs", env=env)

    assert "broken" in process.output()
    scheduled_job = ScheduledJob.objects.get(id="deployed")
    assert "original" in scheduled_job.import_error
    assert DjangoJob.objects.filter(id="deployed").exists()
    process.signal(signal.SIGTERM)
    process.wait()
    assert Execution.objects.filter(job_id="deployed").count() == history

    module.write_text(original)
    scheduler_process("deployed_jobs", env=env)
    wait_for(lambda: Execution.objects.filter(job_id="deployed").count() > history, timeout=15)
    assert ScheduledJob.objects.get(id="deployed").import_error == ""


def kill_other_connections() -> int:
    """Make the database server drop every other connection to the test database."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        ids = [row[0] for row in cursor.fetchall()]
        for connection_id in ids:
            cursor.execute(f"KILL {int(connection_id)}")
        return len(ids)


def test_connections_killed_by_the_server_are_replaced_and_scheduling_goes_on(
    scheduler_process, figures
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no server to drop connections")
    process = scheduler_process("tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "0.1"})
    wait_for(
        lambda: Execution.objects.filter(job_id="proc.slow", status="succeeded").count() >= 2, timeout=15
    )

    killed = []
    for _ in range(3):
        time.sleep(1.2)
        killed.append(kill_other_connections())
    done = Execution.objects.filter(job_id="proc.slow", status="succeeded").count()

    wait_for(
        lambda: Execution.objects.filter(job_id="proc.slow", status="succeeded").count() >= done + 3,
        timeout=15,
    )
    assert process.popen.poll() is None, process.output()
    assert sum(killed) >= 3
    figures(f"{connection.vendor}: killed {sum(killed)} connections, runs went on ({done} -> {done + 3}+)")


@pytest.fixture
def postgres_cluster():
    if connection.vendor != "postgresql":
        pytest.skip("runs once, in the PostgreSQL cells of the matrix")
    cluster = PostgresCluster()
    yield cluster
    cluster.destroy()


def test_a_database_outage_does_not_kill_the_scheduler_and_it_resumes(
    scheduler_process, postgres_cluster, figures
) -> None:
    env = {"DATABASE_URL": postgres_cluster.url, "TEST_SLOW_SECONDS": "0.1"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        check=True,
        timeout=120,
    )
    process = scheduler_process("tests.support.process_jobs", env=env)
    succeeded = "SELECT count(*) FROM scheduling_execution WHERE status = 'succeeded'"
    wait_for(lambda: postgres_cluster.query(succeeded) >= 2, timeout=15)

    postgres_cluster.stop()
    outage = time.monotonic()
    time.sleep(OUTAGE_SECONDS)  # the outage itself: the scheduler must live through it
    assert process.popen.poll() is None, process.output()
    postgres_cluster.start()
    back = time.monotonic()
    before = postgres_cluster.query(succeeded)
    wait_for(lambda: postgres_cluster.query(succeeded) > before, timeout=20)

    resumed = time.monotonic() - back
    figures(f"PostgreSQL down {back - outage:.1f} s; first run recorded {resumed:.1f} s after it came back")
    assert process.popen.poll() is None
    assert "Database error in the scheduler loop" in process.output()


def expected_fires(runs) -> int:
    """Fires of an every-second job between its first and last recorded one."""
    first, last = (
        runs.order_by("scheduled_at")[0].scheduled_at,
        runs.order_by("-scheduled_at")[0].scheduled_at,
    )
    return round((last - first).total_seconds()) + 1


def longest_gap(runs) -> float:
    """The longest time between two consecutive scheduled fires, in seconds."""
    times = list(runs.order_by("scheduled_at").values_list("scheduled_at", flat=True))
    return max((later - earlier).total_seconds() for earlier, later in itertools.pairwise(times))


def active_instance() -> SchedulerInstance | None:
    return SchedulerInstance.objects.filter(role="active", stopped_at__isnull=True).first()


def start_two_schedulers(scheduler_process, marks: Path, job_count: int) -> list:
    """Two runscheduler processes with every-second jobs; returns [active, standby] once running."""
    env = {"TEST_JOB_COUNT": str(job_count), "TEST_MARK_FILE": str(marks)}
    processes = [scheduler_process("tests.support.process_jobs_many", env=env) for _ in range(2)]
    active = wait_for(active_instance, timeout=10)
    wait_for(lambda: Execution.objects.filter(status="succeeded").count() >= job_count * 3, timeout=30)
    return sorted(processes, key=lambda process: process.popen.pid != active.pid)


def test_two_schedulers_run_every_fire_once_and_the_standby_takes_over_after_sigkill(
    scheduler_process, tmp_path: Path, figures
) -> None:
    marks = tmp_path / "marks"
    killed, survivor = start_two_schedulers(scheduler_process, marks, job_count=50)

    time.sleep(FAULT_SECONDS / 2)  # load for a while before the fault
    killed.signal(signal.SIGKILL)
    killed_at = timezone.now()
    killed.wait()
    first = wait_for(
        lambda: (
            Execution.objects.filter(pid=survivor.popen.pid, status="succeeded")
            .order_by("started_at")
            .first()
        ),
        timeout=20,
    )
    takeover = (first.started_at - killed_at).total_seconds()
    time.sleep(FAULT_SECONDS / 2)  # and after it
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0

    runs = Execution.objects.filter(job_id__startswith="many.")
    traces = marks.read_text().split()
    fires = {
        f"{job_id}@{moment.isoformat()}": status
        for job_id, moment, status in runs.values_list("job_id", "scheduled_at", "status")
    }
    succeeded = [fire for fire, status in fires.items() if status == "succeeded"]
    # A run that ended in the instant before the SIGKILL, its outcome not yet written, is
    # recorded as interrupted: it ran, once, and has its row.
    ended_unrecorded = [fire for fire in traces if fires.get(fire) == "interrupted"]
    gaps = [longest_gap(runs.filter(job_id=f"many.{number}")) for number in range(50)]
    expected = sum(expected_fires(runs.filter(job_id=f"many.{number}")) for number in range(50))
    missed = runs.filter(status="missed").count()
    figures(
        f"{connection.vendor}: 2 schedulers, 50 jobs @1 s for {FAULT_SECONDS:g} s: "
        f"{expected} fires expected, {runs.count()} recorded ({len(succeeded)} run, {missed} missed), "
        f"{len(traces) - len(set(traces))} duplicates, {len(ended_unrecorded)} ended as the active one "
        f"was killed (recorded interrupted), standby took over {takeover:.1f} s after SIGKILL of the "
        f"active one, longest gap between fires {max(gaps):.1f} s"
    )
    assert len(traces) == len(set(traces)), "no fire ran twice"
    assert sorted(traces) == sorted(succeeded + ended_unrecorded), "every run has its record"
    assert len(ended_unrecorded) <= 50, "only runs in flight at the kill"
    assert runs.count() == expected, "every fire has its row: run, missed or interrupted"
    assert sorted({trace.split("@")[0] for trace in traces}) == sorted(f"many.{n}" for n in range(50))
    assert not runs.filter(status__in=["failed", "skipped"]).exists()
    assert takeover <= 10
    assert max(gaps) <= 11


def test_a_frozen_active_scheduler_is_replaced_after_its_lease_and_steps_down_when_it_wakes(
    scheduler_process, tmp_path: Path, figures
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip(
            "a process frozen inside an SQLite write transaction holds the database's only write lock"
        )
    marks = tmp_path / "marks"
    frozen, standby = start_two_schedulers(scheduler_process, marks, job_count=20)

    frozen.signal(signal.SIGSTOP)  # a machine gone or a process stuck: its pid stays alive
    frozen_at = timezone.now()
    first = wait_for(
        lambda: (
            Execution.objects.filter(pid=standby.popen.pid, status="succeeded").order_by("started_at").first()
        ),
        timeout=20,
    )
    takeover = (first.started_at - frozen_at).total_seconds()
    frozen.signal(signal.SIGCONT)
    wait_for(lambda: "stopped scheduling" in frozen.output(), timeout=10)
    wait_for(lambda: Execution.objects.filter(pid=standby.popen.pid).count() >= 20 * 4, timeout=30)
    for process in (frozen, standby):
        process.signal(signal.SIGTERM)
        assert process.wait() == 0

    runs = Execution.objects.filter(job_id__startswith="many.")
    traces = marks.read_text().split()
    succeeded = runs.filter(status="succeeded").count()
    gaps = [longest_gap(runs.filter(job_id=f"many.{number}")) for number in range(20)]
    missed = runs.filter(status="missed").count()
    figures(
        f"{connection.vendor}: active scheduler frozen (SIGSTOP): standby took over after {takeover:.1f} s; "
        f"woken, the old one stood down; {succeeded} runs, {missed} fires missed while frozen (recorded), "
        f"{len(traces) - succeeded} duplicates, longest gap between recorded fires {max(gaps):.1f} s"
    )
    assert len(traces) == succeeded
    assert len(set(traces)) == len(traces), "no fire ran twice"
    assert takeover <= 10
    assert max(gaps) <= 11


SERVERS = {
    "gunicorn (WSGI)": [
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--workers",
        "3",
        "--bind",
        "127.0.0.1:{port}",
    ],
    "uvicorn (ASGI)": ["-m", "uvicorn", "config.asgi:application", "--workers", "3", "--port", "{port}"],
}


@pytest.mark.parametrize("server_name", list(SERVERS))
def test_embedded_mode_in_a_multi_worker_server_runs_one_active_scheduler_and_no_duplicates(
    transactional_db, tmp_path: Path, figures, server_name: str
) -> None:
    marks = tmp_path / "marks"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": subprocess_database_url(),
        "SCHEDULING_TEST_EMBEDDED": "1",
        "SCHEDULING_TEST_MODULES": "tests.support.process_jobs_many",
        "TEST_JOB_COUNT": "20",
        "TEST_MARK_FILE": str(marks),
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Each worker starts its scheduler on its first request; enough requests reach all three.
        def every_worker_started() -> bool:
            for _ in range(10):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5).read()
            return SchedulerInstance.objects.filter(stopped_at__isnull=True).count() == 3

        wait_for(every_worker_started, timeout=60, interval=0.2)
        actives = set()
        for _ in range(10):
            actives.add(SchedulerInstance.objects.get(role="active", stopped_at__isnull=True).pk)
            time.sleep(0.5)
        wait_for(lambda: Execution.objects.filter(status="succeeded").count() >= 20 * 5, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    runs = Execution.objects.filter(job_id__startswith="many.")
    traces = marks.read_text().split()
    succeeded = runs.filter(status="succeeded").count()
    figures(
        f"{connection.vendor}: embedded in {server_name} with 3 workers: 3 schedulers, "
        f"{len(actives)} active, {succeeded} runs, {len(traces) - succeeded} duplicates"
    )
    assert len(actives) == 1
    assert len(set(runs.values_list("pid", flat=True))) == 1
    assert len(traces) == succeeded
    assert len(set(traces)) == len(traces), "no fire ran twice"
    assert SchedulerInstance.objects.filter(stopped_at__isnull=True).count() == 0, (
        "workers stop their schedulers"
    )


def test_the_standby_marks_the_run_in_flight_of_a_killed_active_scheduler_interrupted(
    scheduler_process, figures
) -> None:
    processes = [
        scheduler_process("tests.support.process_jobs", env={"TEST_SLOW_SECONDS": "60"}) for _ in range(2)
    ]
    execution = wait_for(lambda: running("proc.slow"), timeout=15)
    killed = next(process for process in processes if process.popen.pid == execution.pid)

    killed.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    killed.wait()  # reaped, as a supervisor would: a zombie still counts as a live process

    wait_for(
        lambda: Execution.objects.get(pk=execution.pk).status == Execution.Status.INTERRUPTED, timeout=10
    )
    figures(
        f"{connection.vendor}: a run in flight on the SIGKILLed active scheduler was marked interrupted "
        "by the standby "
        f"{time.monotonic() - killed_at:.1f} s later"
    )
    wait_for(lambda: (run := running("proc.slow")) is not None and run.pk != execution.pk, timeout=10)
