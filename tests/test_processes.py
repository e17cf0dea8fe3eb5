"""Real runscheduler processes: signals, crashes, changes from other processes, deploys."""

from __future__ import annotations

import signal
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.triggers.date import DateTrigger
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control
from scheduling.models import Execution, ScheduledJob, SchedulerInstance
from scheduling.store import JobStore
from tests import jobs
from tests.conftest import wait_for

pytestmark = pytest.mark.processes


def running(job_id: str) -> Execution | None:
    return Execution.objects.filter(job_id=job_id, status="running").first()


def test_sigterm_waits_for_the_running_job_and_records_its_outcome(scheduler_process) -> None:
    process = scheduler_process("tests.process_jobs", env={"TEST_SLOW_SECONDS": "3"})
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 0
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.duration >= 3
    assert Execution.objects.filter(status="running").count() == 0
    assert SchedulerInstance.objects.get(pid=process.popen.pid).stopped_at is not None
    print(f"\nSIGTERM mid-run: run finished after {execution.duration:.2f} s, exit code 0")


def test_sigterm_past_the_shutdown_timeout_records_the_run_as_interrupted(scheduler_process) -> None:
    process = scheduler_process(
        "tests.process_jobs", env={"TEST_SLOW_SECONDS": "60"}, args=["--shutdown-timeout", "0.5"]
    )
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signal.SIGTERM)

    assert process.wait(timeout=20) == 0
    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED
    assert "did not wait longer than 0.5 s" in execution.exception


def test_a_run_killed_with_sigkill_is_marked_interrupted_on_restart(scheduler_process) -> None:
    process = scheduler_process("tests.process_jobs", env={"TEST_SLOW_SECONDS": "60"})
    execution = wait_for(lambda: running("proc.slow"), timeout=15)

    process.signal(signal.SIGKILL)
    process.wait(timeout=10)
    execution.refresh_from_db()
    assert execution.status == Execution.Status.RUNNING

    scheduler_process("tests.process_jobs", env={"TEST_SLOW_SECONDS": "60"})

    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED


def test_changes_made_by_another_process_are_obeyed_within_a_second(scheduler_process) -> None:
    scheduler_process("tests.process_jobs_idle")

    changed = timezone.now()
    control.reschedule("proc.hourly", interval={"seconds": 1})
    rescheduled = wait_for(lambda: Execution.objects.filter(job_id="proc.hourly").first(), timeout=10)

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
    added = wait_for(lambda: Execution.objects.filter(job_id="one-off").first(), timeout=10)

    lateness = [(e.started_at - e.scheduled_at).total_seconds() for e in (rescheduled, added)]
    print(
        f"\nchanges from another process: first runs started {lateness[0]:.3f} s and {lateness[1]:.3f} s late"
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
    meta = ScheduledJob.objects.get(id="deployed")
    assert "original" in meta.import_error
    assert DjangoJob.objects.filter(id="deployed").exists()
    process.signal(signal.SIGTERM)
    process.wait()
    assert Execution.objects.filter(job_id="deployed").count() == history

    module.write_text(original)
    scheduler_process("deployed_jobs", env=env)
    wait_for(lambda: Execution.objects.filter(job_id="deployed").count() > history, timeout=15)
    assert ScheduledJob.objects.get(id="deployed").import_error == ""
