"""Scaling out: one scheduler, task workers in other processes, every run recorded exactly once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from django.db import connection

from scheduling import control
from scheduling.models import Execution
from tests.conftest import wait_for
from tests.support.spread import settle

pytestmark = pytest.mark.processes

RUNS = 200
TASK_TIMEOUT = 5  # SCHEDULING_TASK_TIMEOUT of the scheduler under test, in seconds
SPREAD_JOBS = 20


def span(run: Execution) -> tuple[datetime, datetime]:
    """When a finished run started and finished: both are set once it has."""
    assert run.started_at is not None
    assert run.finished_at is not None
    return run.started_at, run.finished_at


def start_worker(scheduler_process, worker_id: str, marks: Path, queue: str = "default"):
    # With the scheduler's job module: a worker runs only functions its own code declares.
    return scheduler_process(
        "tests.support.process_jobs_tasks",
        env={"TEST_JOB_COUNT": str(SPREAD_JOBS), "TEST_MARK_FILE": str(marks)},
        command="db_worker",
        started_text="Starting worker",
        args=[
            "--queue-name",
            queue,
            "--interval",
            "0.05",
            "--no-startup-delay",
            "--no-reload",
            "--worker-id",
            worker_id,
        ],
    )


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="run once, on PostgreSQL, the documented backend"
)
def test_runs_spread_over_two_workers_are_each_recorded_once_and_a_killed_worker_is_noticed(
    scheduler_process, figures, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    scheduler_process(
        "tests.support.process_jobs_tasks",
        env={
            "TEST_JOB_COUNT": str(SPREAD_JOBS),
            "TEST_MARK_FILE": str(marks),
            "SCHEDULING_TEST_TASK_TIMEOUT": str(TASK_TIMEOUT),
        },
    )
    workers = [start_worker(scheduler_process, f"worker-{number}", marks) for number in (1, 2)]
    spread = Execution.objects.filter(job_id__in=[f"spread.{number}" for number in range(SPREAD_JOBS)])

    wait_for(lambda: spread.count() >= RUNS, timeout=90, interval=0.2)
    rows = settle([f"spread.{number}" for number in range(SPREAD_JOBS)], "spread.fails")
    fails = Execution.objects.filter(job_id="spread.fails")
    assert len(rows) >= RUNS
    worker_pids = {worker.popen.pid for worker in workers}
    assert {row["pid"] for row in rows} == worker_pids  # both workers used, nothing else ran them
    traces = [line.split() for line in marks.read_text().splitlines()]
    fires = Counter(fire for fire, _ in traces)
    assert max(fires.values()) == 1  # no fire ran twice
    assert set(fires) == {f"{row['job_id']}@{row['scheduled_at'].isoformat()}" for row in rows}
    by_worker = Counter(int(pid) for _, pid in traces)
    assert set(by_worker) == worker_pids

    failed = Execution.objects.filter(job_id="spread.fails", status="failed")
    assert failed.exists()
    # Each run failed; on a busy machine a fire may find the previous one still queued (skipped).
    assert not fails.exclude(status__in=["failed", "skipped"]).exists()
    assert all('raise ValueError("this job fails on purpose")' in row.traceback for row in failed)

    # A third worker, alone on the "reports" queue, is killed while it runs the slow job.
    doomed = start_worker(scheduler_process, "worker-3", marks, queue="reports")
    control.run_now("spread.slow", requested_by="test")
    slow = wait_for(
        lambda: Execution.objects.filter(job_id="spread.slow", status="running").first(), timeout=30
    )
    assert slow.pid == doomed.popen.pid
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()

    wait_for(
        lambda: Execution.objects.filter(pk=slow.pk, status="interrupted").exists(), timeout=TASK_TIMEOUT + 30
    )
    noticed_after = time.monotonic() - killed_at
    slow.refresh_from_db()
    assert "sent no outcome within 5 s" in slow.exception
    figures(
        f"Scaling out (PostgreSQL): {len(rows)} runs of {SPREAD_JOBS} jobs over 2 db_workers "
        f"({', '.join(str(count) for count in sorted(by_worker.values()))} each), all succeeded once; "
        f"{failed.count()} failures with tracebacks; a SIGKILLed worker's run recorded interrupted "
        f"{noticed_after:.1f} s later (timeout {TASK_TIMEOUT} s)"
    )


def test_a_cpu_bound_job_in_the_process_pool_does_not_delay_other_jobs(scheduler_process, figures) -> None:
    scheduler_process("tests.support.process_jobs_cpu")
    burns = Execution.objects.filter(job_id="cpu.burn", status="succeeded")
    wait_for(lambda: burns.count() >= 3, timeout=90, interval=0.2)

    windows = [span(burn) for burn in burns]
    ticks = [
        tick
        for tick in Execution.objects.filter(job_id="cpu.tick", status="succeeded")
        if any(start <= tick.scheduled_at <= end for start, end in windows)
    ]
    durations = [burn.duration or 0.0 for burn in burns]  # set on every finished run
    assert {burn.ran_in for burn in burns} == {"processes"}
    assert min(durations) >= 1  # it did hold a CPU (and its GIL) a while
    assert len(ticks) >= 3
    lateness = [(span(tick)[0] - tick.scheduled_at).total_seconds() for tick in ticks]
    # Normal lateness is milliseconds; a thread holding the scheduler's GIL would add its whole run.
    assert max(lateness) < 0.5, lateness
    figures(
        f"CPU-bound job in the process pool ({len(windows)} runs of "
        f"{min(durations):.1f}-{max(durations):.1f} s): "
        f"{len(ticks)} runs of a 1 s job meanwhile started {1000 * max(lateness):.0f} ms late at most"
    )


def test_a_run_in_the_process_pool_past_the_shutdown_timeout_is_interrupted_and_its_child_ended(
    scheduler_process, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    process = scheduler_process(
        "tests.support.process_jobs_stuck",
        env={"TEST_PID_FILE": str(pid_file)},
        args=["--shutdown-timeout", "0.5"],
    )
    execution = wait_for(
        lambda: Execution.objects.filter(job_id="pool.stuck", status="running").first(), timeout=30
    )
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))

    process.signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0
    execution.refresh_from_db()
    assert execution.status == "interrupted"
    assert "did not wait longer than 0.5 s" in execution.exception
    wait_for(
        lambda: (
            not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        )
    )
