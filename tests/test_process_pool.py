"""Jobs placed in the scheduler's process pool: run in a spawned Django process, recorded by the scheduler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduling import job
from scheduling.history.recorder import Recorder
from scheduling.models import Execution
from scheduling.placement import RunsIn
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs
from tests.test_tasks import make_due

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPool]:
    pool = ProcessPool(1)
    yield pool
    pool.shutdown()


@pytest.fixture
def dispatcher(processes: ProcessPool) -> Iterator[Dispatcher]:
    recorder = Recorder()
    pool = ThreadTarget(recorder, max_workers=2)
    yield Dispatcher(JobStore(), recorder, run_targets(pool, processes))
    pool.shutdown()


def run_due(registry: dict, dispatcher: Dispatcher) -> None:
    sync(dispatcher.store, registry.values())
    dispatcher.dispatch(make_due(dispatcher.store), datetime.now(UTC))
    threads = dispatcher.targets[RunsIn.THREADS]
    assert isinstance(threads, ThreadTarget)
    assert threads.wait(60)


def test_a_job_in_the_process_pool_runs_in_another_process_and_knows_its_run(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="in-processes", runs_in="processes", args=[str(notes)])(jobs.note_process)

    run_due(registry, dispatcher)

    execution = Execution.objects.get()
    assert (execution.status, execution.ran_in) == ("succeeded", "processes"), execution.exception
    pid, scheduled_at = notes.read_text().split()
    assert int(pid) != os.getpid()
    assert scheduled_at == execution.scheduled_at.isoformat()


def test_a_failure_in_the_process_pool_is_recorded_with_its_traceback(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="fails-in-processes", runs_in="processes")(jobs.fail)

    run_due(registry, dispatcher)

    execution = Execution.objects.get()
    assert execution.status == "failed"
    assert execution.exception == "ValueError: this job fails on purpose"
    assert 'raise ValueError("this job fails on purpose")' in execution.traceback


def test_a_child_that_dies_fails_its_run_and_the_pool_is_replaced(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    job(interval=30, id="dies", runs_in="processes")(jobs.die)
    run_due(registry, dispatcher)
    died = Execution.objects.get(job_id="dies")
    assert died.status == "failed"
    assert died.exception.startswith("The process running the job died: ")

    dispatcher.store.remove_job("dies")
    job(interval=30, id="after", runs_in="processes", args=[str(tmp_path / "notes")])(jobs.note_process)
    run_due(registry, dispatcher)

    assert Execution.objects.get(job_id="after").status == "succeeded"
