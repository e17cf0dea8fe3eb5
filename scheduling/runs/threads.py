"""Running a job: on a pool thread, with fresh database connections, recorded in the history.

APScheduler's own ``run_job`` calls the function and reports events; it cannot await a
coroutine on a thread pool (the coroutine is created and dropped, and the run is reported as
successful) and it writes no history. This module replaces it for our executor.
"""

from __future__ import annotations

import concurrent.futures
import logging
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from django.db import close_old_connections
from django.dispatch import Signal
from django.utils import timezone

from scheduling import context, signals
from scheduling.history.recorder import Recorder
from scheduling.history.rows import SCHEDULED, Origin, Outcome, missed_message
from scheduling.models import Execution
from scheduling.placement import PROCESSES, Placement
from scheduling.runs import call as invoke
from scheduling.runs.processes import ProcessPool

logger = logging.getLogger(__name__)


class RecordingThreadPoolExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool executor, running jobs through :func:`run_job`."""

    def __init__(
        self, recorder: Recorder, max_workers: int = 10, processes: ProcessPool | None = None
    ) -> None:
        super().__init__(max_workers=max_workers, pool_kwargs={"thread_name_prefix": "scheduling-job"})
        self.recorder = recorder
        # Runs placed in the process pool are supervised from these threads (see scheduling.processes).
        self.processes = processes
        self._futures: set[concurrent.futures.Future[list[JobExecutionEvent]]] = set()
        # Runs of each job still going in other schedulers (see history.running_elsewhere): they
        # count against max_instances too, until they end or are recorded interrupted.
        self.elsewhere: dict[str, int] = {}

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # Only APScheduler's own paths come here; the scheduler loop goes through the dispatcher.
        self._submit(job, run_times, SCHEDULED)

    def reserve(self, job: Job) -> bool:
        """Count a run of ``job`` as started, unless max_instances are already running."""
        with self._lock:
            if self._instances[job.id] + self.elsewhere.get(job.id, 0) >= job.max_instances:
                return False
            self._instances[job.id] += 1
            return True

    def release(self, job: Job) -> None:
        """Give back a slot taken by :meth:`reserve` for a run that will not start."""
        self._run_job_success(job.id, [])

    def submit_recorded(self, job: Job, executions: list[Execution], origin: Origin = SCHEDULED) -> bool:
        """Run a reserved job for fires already recorded as running (by the dispatcher).

        False when the pool no longer takes work: the scheduler is stopping.
        """
        if not executions:  # its fires had rows already: another scheduler ran them
            self.release(job)
            return True
        run_times = [execution.scheduled_at for execution in executions]
        try:
            future = self._pool.submit(
                run_job, job, run_times, self.recorder, origin, executions, self.processes
            )
        except RuntimeError:  # "cannot schedule new futures after shutdown"
            self.release(job)
            return False
        self._futures.add(future)
        future.add_done_callback(lambda done: self._job_done(job.id, done))
        return True

    def _submit(self, job: Job, run_times: list[datetime], origin: Origin) -> None:
        future = self._pool.submit(run_job, job, run_times, self.recorder, origin, None, self.processes)
        self._futures.add(future)
        future.add_done_callback(lambda done: self._job_done(job.id, done))

    def _job_done(self, job_id: str, future: concurrent.futures.Future[list[JobExecutionEvent]]) -> None:
        self._futures.discard(future)
        exception = future.exception()
        if exception is not None:
            self._run_job_error(job_id, exception, exception.__traceback__)
        else:
            self._run_job_success(job_id, future.result())

    def wait(self, timeout: float) -> bool:
        """Wait for running jobs; True if all finished within ``timeout`` seconds."""
        _, not_done = concurrent.futures.wait(set(self._futures), timeout=timeout)
        return not not_done

    @property
    def running(self) -> int:
        return len(self._futures)


def run_job(
    job: Job,
    run_times: list[datetime],
    recorder: Recorder,
    origin: Origin = SCHEDULED,
    executions: list[Execution] | None = None,
    processes: ProcessPool | None = None,
) -> list[JobExecutionEvent]:
    """Run one job for each of its due fire times, recording each; returns APScheduler events.

    ``executions`` are the fires' rows when they were recorded as running already.
    """
    events = []
    try:
        for number, run_time in enumerate(run_times):
            # Like a request: stale or broken connections are replaced before each run, and
            # CONN_MAX_AGE decides whether they are kept after it.
            close_old_connections()
            execution = executions[number] if executions else None
            event = _run_once(job, run_time, recorder, origin, execution, processes)
            if event is not None:
                events.append(event)
    finally:
        close_old_connections()
    return events


def _run_once(
    job: Job,
    run_time: datetime,
    recorder: Recorder,
    origin: Origin,
    execution: Execution | None,
    processes: ProcessPool | None,
) -> JobExecutionEvent | None:
    message = missed_message(datetime.now(UTC) - run_time, job.misfire_grace_time)
    if message is not None and origin == SCHEDULED:
        logger.warning("Job %s missed its run at %s: %s", job.id, run_time, message)
        if execution is None:
            missed = recorder.record(job.id, [run_time], Execution.Status.MISSED, message)
        else:
            outcome = Outcome(Execution.Status.MISSED, None, timezone.now(), None, message)
            _finish(recorder, execution, outcome, signals.job_missed)
            missed = [execution]
        for row in missed:
            notify(signals.job_missed, row)
        return JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
    if execution is None:
        execution = recorder.start(job.id, run_time, origin)
        if execution is None:
            return None
    notify(signals.job_started, execution)
    token = context.current.set(execution)
    try:
        outcome = call(job, execution, processes)
    finally:
        context.current.reset(token)
    signal = signals.job_succeeded if outcome.status == Execution.Status.SUCCEEDED else signals.job_failed
    _finish(recorder, execution, outcome, signal)
    notify(signal, execution)
    code = EVENT_JOB_EXECUTED if outcome.status == Execution.Status.SUCCEEDED else EVENT_JOB_ERROR
    return JobExecutionEvent(code, job.id, job._jobstore_alias, run_time)


def _finish(recorder: Recorder, execution: Execution, outcome: Outcome, signal: Signal) -> None:
    # A receiver of the signal that follows may read the row: then it must be on disk first.
    recorder.finish(execution, outcome, wait=signal.has_listeners(sender=execution.job_id))
    execution.status, execution.finished_at, execution.duration = (
        outcome.status,
        outcome.finished_at,
        outcome.duration,
    )
    execution.exception, execution.traceback = outcome.exception, outcome.traceback
    if outcome.started_at is not None:
        execution.started_at = outcome.started_at


def notify(signal: Signal, execution: Execution) -> None:
    """Send a signal; a receiver that fails is logged and never stops the run or the scheduler."""
    for receiver, result in signal.send_robust(sender=execution.job_id, execution=execution):
        if isinstance(result, Exception):
            logger.error("A receiver of a scheduling signal failed (%r): %s", receiver, result)


def call(job: Job, execution: Execution | None, processes: ProcessPool | None) -> Outcome:
    """Call the job's function where its placement says: on this thread or in the process pool."""
    if processes is not None and Placement.of(job.executor).kind == PROCESSES:
        return processes.call(job.id, job.func_ref, job.args, job.kwargs, execution)
    return invoke.call(job.id, job.func, job.args, job.kwargs)
