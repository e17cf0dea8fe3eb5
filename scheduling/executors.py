"""Running a job: on a pool thread, with fresh database connections, recorded in the history.

APScheduler's own ``run_job`` calls the function and reports events; it cannot await a
coroutine on a thread pool (the coroutine is created and dropped, and the run is reported as
successful) and it writes no history. This module replaces it for our executor.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from asgiref.sync import async_to_sync
from django.db import close_old_connections
from django.dispatch import Signal
from django.utils import timezone

from scheduling import signals
from scheduling.history import SCHEDULED, Origin, Outcome, Recorder, describe_exception
from scheduling.models import Execution

logger = logging.getLogger(__name__)

MAX_COALESCED_RECORDS = 1000  # rows written for one coalesced run, so a long outage stays cheap


class RecordingThreadPoolExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool executor, running jobs through :func:`run_job`."""

    def __init__(self, recorder: Recorder, max_workers: int = 10) -> None:
        super().__init__(max_workers=max_workers, pool_kwargs={"thread_name_prefix": "scheduling-job"})
        self.recorder = recorder
        self._futures: set[concurrent.futures.Future[list[JobExecutionEvent]]] = set()

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if job.coalesce:
            self._record_coalesced(job, run_times[-1])
        self._submit(job, run_times, SCHEDULED)

    def _record_coalesced(self, job: Job, kept: datetime) -> None:
        """Record the fires a coalesced run stands for, which APScheduler silently drops."""
        skipped = [moment for moment in job._get_run_times(datetime.now(UTC)) if moment < kept]
        if not skipped:
            return
        logger.warning(
            "Job %s missed %d run(s) while no scheduler ran it; running it once", job.id, len(skipped)
        )
        message = f"Missed: coalesced into the run scheduled for {kept.isoformat()}"
        if len(skipped) > MAX_COALESCED_RECORDS:
            unlisted = len(skipped) - MAX_COALESCED_RECORDS
            message += f" ({len(skipped)} fires missed in all; the {unlisted} oldest have no row)"
            skipped = skipped[-MAX_COALESCED_RECORDS:]
        for execution in self.recorder.record(job.id, skipped, Execution.Status.MISSED, message):
            notify(signals.job_missed, execution)

    def submit_manual(self, job: Job, requested_at: datetime, requested_by: str) -> None:
        """Run a job now on request; max_instances applies as to scheduled runs.

        :raises MaxInstancesReachedError: when the job already runs max_instances times.
        """
        with self._lock:
            if self._instances[job.id] >= job.max_instances:
                raise MaxInstancesReachedError(job)
            self._submit(job, [requested_at], Origin(Execution.Origin.MANUAL, requested_by))
            self._instances[job.id] += 1

    def _submit(self, job: Job, run_times: list[datetime], origin: Origin) -> None:
        future = self._pool.submit(run_job, job, run_times, self.recorder, origin)
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
    job: Job, run_times: list[datetime], recorder: Recorder, origin: Origin = SCHEDULED
) -> list[JobExecutionEvent]:
    """Run one job for each of its due fire times, recording each; returns APScheduler events."""
    events = []
    try:
        for run_time in run_times:
            # Like a request: stale or broken connections are replaced before each run, and
            # CONN_MAX_AGE decides whether they are kept after it.
            close_old_connections()
            event = _run_once(job, run_time, recorder, origin)
            if event is not None:
                events.append(event)
    finally:
        close_old_connections()
    return events


def _run_once(job: Job, run_time: datetime, recorder: Recorder, origin: Origin) -> JobExecutionEvent | None:
    lateness = datetime.now(UTC) - run_time
    late = job.misfire_grace_time is not None and lateness > timedelta(seconds=job.misfire_grace_time)
    if late and origin == SCHEDULED:
        logger.warning("Job %s missed its run at %s by %s", job.id, run_time, lateness)
        for missed in recorder.record(
            job.id,
            [run_time],
            Execution.Status.MISSED,
            f"Missed: started {lateness.total_seconds():.1f} s late, after its misfire grace time "
            f"of {job.misfire_grace_time} s",
        ):
            notify(signals.job_missed, missed)
        return JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
    execution = recorder.start(job.id, run_time, origin)
    if execution is None:
        return None
    notify(signals.job_started, execution)
    outcome = call(job)
    recorder.finish(execution, outcome)
    execution.status, execution.finished_at, execution.duration = (
        outcome.status,
        outcome.finished_at,
        outcome.duration,
    )
    execution.exception, execution.traceback = outcome.exception, outcome.traceback
    notify(
        signals.job_succeeded if outcome.status == Execution.Status.SUCCEEDED else signals.job_failed,
        execution,
    )
    code = EVENT_JOB_EXECUTED if outcome.status == Execution.Status.SUCCEEDED else EVENT_JOB_ERROR
    return JobExecutionEvent(code, job.id, job._jobstore_alias, run_time)


def notify(signal: Signal, execution: Execution) -> None:
    """Send a signal; a receiver that fails is logged and never stops the run or the scheduler."""
    for receiver, result in signal.send_robust(sender=execution.job_id, execution=execution):
        if isinstance(result, Exception):
            logger.error("A receiver of a scheduling signal failed (%r): %s", receiver, result)


def call(job: Job) -> Outcome:
    """Call the job's function (awaiting it if it is a coroutine function) and time it."""
    started_at = timezone.now()
    clock = time.perf_counter()
    logger.info("Running job %s", job.id)
    try:
        function: Any = job.func
        if inspect.iscoroutinefunction(function):
            function = async_to_sync(function)
        function(*job.args, **job.kwargs)
    # The job's own failure, whatever it is, becomes its recorded outcome.
    except BaseException as exc:
        duration = time.perf_counter() - clock
        message, formatted = describe_exception(exc)
        logger.error("Job %s failed after %.3f s: %s", job.id, duration, message)
        return Outcome(Execution.Status.FAILED, started_at, timezone.now(), duration, message, formatted)
    duration = time.perf_counter() - clock
    logger.info("Job %s succeeded in %.3f s", job.id, duration)
    return Outcome(Execution.Status.SUCCEEDED, started_at, timezone.now(), duration)
