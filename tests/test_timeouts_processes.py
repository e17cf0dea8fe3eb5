"""Timeouts and cancel across real processes: a runscheduler with its process pool, a db_worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduling import control
from scheduling.models import Execution
from tests.conftest import wait_for

pytestmark = pytest.mark.processes

MODULES = "tests.support.timeout_jobs"


def ended(job_id: str, timeout: float = 60) -> Execution:
    return wait_for(
        lambda: Execution.objects.filter(job_id=job_id).exclude(status__in=["enqueued", "running"]).first(),
        timeout,
    )


def running(job_id: str) -> Execution:
    return wait_for(lambda: Execution.objects.filter(job_id=job_id, status="running").first(), timeout=60)


def test_the_scheduler_stops_a_stubborn_pool_run_at_its_timeout_and_a_thread_run_on_cancel(
    scheduler_process, tmp_path: Path
) -> None:
    scheduler_process(MODULES, env={"TEST_NOTES_DIR": str(tmp_path)})

    control.run_now("stop.pool", requested_by="test")
    control.run_now("stop.thread", requested_by="test")
    thread_run = running("stop.thread")
    control.cancel(thread_run.pk, "alice")  # from this process, as the admin or a script would

    pool_run = ended("stop.pool")
    assert pool_run.status == "timed_out", pool_run.exception
    assert pool_run.exception == (
        "Timed out: stopped after its timeout of 5 s (with SIGKILL: it had not ended 5 s after SIGTERM)"
    )
    assert "finished" not in (tmp_path / "pool").read_text()
    thread_run = ended("stop.thread")
    assert thread_run.status == "cancelled"
    assert thread_run.exception == "Cancelled by alice; the job returned (succeeded) after the request"


def test_a_task_worker_stops_a_run_at_its_timeout_and_tells_another_of_its_cancel(
    scheduler_process, tmp_path: Path
) -> None:
    env = {"TEST_NOTES_DIR": str(tmp_path)}
    scheduler_process(MODULES, env=env)
    worker = scheduler_process(
        MODULES,
        env=env,
        command="db_worker",
        started_text="Starting worker",
        args=["--interval", "0.05", "--no-startup-delay", "--no-reload", "--worker-id", "stopper"],
    )

    control.run_now("stop.worker", requested_by="test")
    stopped = ended("stop.worker")
    assert stopped.status == "timed_out", stopped.exception
    assert stopped.pid == worker.popen.pid
    assert "SIGKILL" in stopped.exception
    child_pid = int((tmp_path / "worker").read_text().split()[1])
    assert child_pid != worker.popen.pid  # it ran in a child of the worker, which is gone
    assert "finished" not in (tmp_path / "worker").read_text()

    control.run_now("stop.worker-cooperative", requested_by="test")
    run = running("stop.worker-cooperative")
    control.cancel(run.pk, "bob")
    run = ended("stop.worker-cooperative")
    assert run.status == "cancelled", run.exception
    assert run.exception == "Cancelled by bob; the job returned (succeeded) after the request"
    assert (tmp_path / "cooperative").read_text().endswith("cancel requested: True\n")
