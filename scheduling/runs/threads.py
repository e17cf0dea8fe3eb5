"""Runs on the scheduler's threads: a pool of threads, each run recorded in the history.

APScheduler's ``run_job`` calls the function and reports events; it cannot await a coroutine on
a thread pool (the coroutine is created and dropped, and the run is reported as successful) and
it writes no history. Here a run's row is written before it starts (by the dispatcher) and its
outcome after, and the pool counts the runs of each job going on for max_instances.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from apscheduler.job import Job
from django.db import DatabaseError, close_old_connections
from django.dispatch import Signal
from django.utils import timezone

from scheduling import context, signals
from scheduling.history.recorder import Recorder
from scheduling.history.rows import SCHEDULED, Origin, Outcome, missed_message
from scheduling.models import Execution
from scheduling.placement import RunsIn
from scheduling.policy import RunPolicy
from scheduling.runs.base import slots_left
from scheduling.runs.call import arguments_of, call_job
from scheduling.runs.holding import Holding
from scheduling.runs.live import LiveRun, LiveRuns
from scheduling.runs.observers import RunFacts, facts_for, observing, trace_context
from scheduling.runs.pool import RunPool
from scheduling.signals import notify

logger = logging.getLogger(__name__)

NOT_STARTED_LEASE = (
    "Interrupted: the scheduler lost its lease between claiming the run ahead of its time and "
    "that time; it was not started"
)

# How a run's function is called: on the supervising thread itself, or in a child process; with
# what the run's observers need to know (None when none is enabled).
Caller = Callable[[Job, Execution, LiveRun, RunFacts | None], Outcome]


class RunAbandoned(Exception):
    """The run's caller gave it up (the scheduler is stopping): no outcome is written, so its row
    stays running until the runner records it interrupted."""


def call_here(job: Job, execution: Execution, live: LiveRun, facts: RunFacts | None) -> Outcome:
    # No facts: no observer was enabled when the run was handed over (RunControl.observing).
    args, kwargs = arguments_of(job.args, job.kwargs, execution)
    return call_job(job.id, job.func, args, kwargs, facts, look=facts is not None)


class ThreadTarget:
    """The scheduler's thread pool as a run target; it also supervises runs in the process pool."""

    runs_in = RunsIn.THREADS
    holds_runs = True  # until their time, in self.holding

    def __init__(self, recorder: Recorder, max_workers: int = 10) -> None:
        self.recorder = recorder
        self.max_workers = max_workers
        self._pool = RunPool(max_workers, name="scheduling-job")
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # runs of each job reserved here and not ended
        # Runs of each job still going in other schedulers (see history.housekeeping.running_elsewhere):
        # they count against max_instances too, until they end or are recorded interrupted.
        self.elsewhere: dict[str, int] = {}
        self.live = LiveRuns()  # the runs going on, by execution: deadlines and cancel flags
        # Runs claimed ahead of their time wait there, not on a pool thread (fire-ahead).
        self.holding = Holding(lambda refused: self.not_started(refused, NOT_STARTED_LEASE))
        # Runs claimed ahead and dropped before their start, with how they ended, to record
        # (interrupted, cancelled): the database refused so far.
        self._not_started: list[tuple[Execution, str, str]] = []

    def count_busy(self, jobs: list[Job]) -> None:
        """Nothing to count: the runs going on here are counted as they start and end."""

    def reserve(self, job: Job, fires: int = 1, waiting: int = 0) -> int:
        """Take one slot for all ``fires``, run one after the other (APScheduler's rule for
        coalesce=False); returns ``fires``, or 0 when max_instances runs are going already."""
        with self._lock:
            if not slots_left(job, self._running[job.id] + self.elsewhere.get(job.id, 0) + waiting):
                return 0
            self._running[job.id] += 1
            return fires

    def release(self, job: Job) -> None:
        with self._lock:
            self._running[job.id] -= 1
            if self._running[job.id] <= 0:
                del self._running[job.id]

    def row(self, job: Job, scheduled_at: datetime, origin: Origin) -> Execution:
        return self.recorder.running_row(job.id, scheduled_at, origin, ran_in=self.runs_in)

    def submit(self, job: Job, executions: list[Execution], origin: Origin, policy: RunPolicy) -> int:
        return self.supervise(job, executions, origin, policy, call_here, stoppable=False)

    def supervise(
        self,
        job: Job,
        executions: list[Execution],
        origin: Origin,
        policy: RunPolicy,
        caller: Caller,
        stoppable: bool,
    ) -> int:
        """Run a reserved job on a pool thread for fires already recorded as running; returns the
        runs not started (all of them when the pool no longer takes work: the scheduler stops).

        Fires claimed ahead of their time (recorded without a start) are held until it (see
        scheduling.runs.holding); the others start at once."""
        if not executions:  # its fires had rows already: another scheduler ran them
            self.release(job)
            return 0
        first = executions[0]
        # Read here, on the dispatch's thread: a held run goes to the pool from the timer's.
        control = RunControl(self.live, policy.timeout, stoppable, trace_context(), observing())
        if first.started_at is None and first.status == Execution.Status.RUNNING:
            if self.holding.hold(
                first.scheduled_at,
                executions,
                lambda: self._submit(job, executions, origin, caller, control),
                lambda: self.release(job),
            ):
                return 0
            self.release(job)
            return len(executions)
        return self._submit(job, executions, origin, caller, control)

    def _submit(
        self, job: Job, executions: list[Execution], origin: Origin, caller: Caller, control: RunControl
    ) -> int:
        run_times = [execution.scheduled_at for execution in executions]

        def run() -> None:
            try:
                run_job(job, run_times, self.recorder, origin, executions, caller, control)
            except Exception:
                logger.exception("Job %s: its run ended in an error of the scheduler", job.id)
            finally:
                self.release(job)

        if not self._pool.submit(run):  # the scheduler stops
            self.release(job)
            return len(executions)
        return 0

    def wait(self, timeout: float) -> bool:
        """Wait for running jobs; True if all finished within ``timeout`` seconds."""
        return self._pool.wait(timeout)

    def shutdown(self, wait: bool = True, start_held_until: float | None = None) -> None:
        """Take no more runs; start those held for a time up to ``start_held_until`` (seconds since
        the epoch) at their time, and none of the others (their rows stay running, for the runner
        to record interrupted); with ``wait``, return once the runs going on have ended."""
        self.holding.stop(start_held_until)
        self._pool.shutdown(wait=wait)

    def check(self) -> None:
        """Once a tick: runs past their timeout, and cancel requests (see LiveRuns.check). A run
        claimed ahead whose cancel was asked for before its time never starts: it is recorded
        cancelled (one whose time came first starts, and is told to stop as any run going on)."""
        asked = self.live.check(self.holding.ids())
        if not asked:
            return
        for execution in self.holding.cancel(asked):
            by = asked[execution.pk] or "a script"
            logger.info(
                "Run %s of job %s: cancelled by %s before it started", execution.pk, execution.job_id, by
            )
            self._end_unstarted(
                [execution], Execution.Status.CANCELLED, f"Cancelled by {by} before it started"
            )

    def drop_held(self, reason: str) -> int:
        """Start none of the runs held for their time: they are recorded interrupted, for
        ``reason``; returns how many (the scheduler steps down: it may no longer start runs)."""
        return self.not_started(self.holding.drop_all(), reason)

    def not_started(self, executions: list[Execution], reason: str) -> int:
        """Record runs claimed ahead and never started as interrupted (only while their rows still
        say so: running, without a start); returns how many were written now."""
        return self._end_unstarted(executions, Execution.Status.INTERRUPTED, reason)

    def _end_unstarted(self, executions: list[Execution], status: str, message: str) -> int:
        """Record runs claimed ahead and dropped before their start as ``status`` (interrupted,
        or cancelled), with ``message``. When the database refuses, they are kept and tried again
        at :meth:`record_not_started` (every tick): left running, they would count against their
        jobs' max_instances in the scheduler that took over."""
        with self._lock:
            self._not_started += [(execution, status, message) for execution in executions]
        return self.record_not_started()

    def record_not_started(self) -> int:
        with self._lock:
            waiting, self._not_started = self._not_started, []
        if not waiting:
            return 0
        count = 0
        try:
            for status, message in dict.fromkeys((status, message) for _, status, message in waiting):
                ids = [execution.pk for execution, *ending in waiting if ending == [status, message]]
                rows = Execution.objects.filter(pk__in=ids, started_at__isnull=True).running()
                written = rows.update(status=status, finished_at=timezone.now(), exception=message)
                waiting = [entry for entry in waiting if entry[1:] != (status, message)]
                if written and status == Execution.Status.INTERRUPTED:
                    logger.warning(
                        "%d run(s) claimed ahead were recorded interrupted, never started", written
                    )
                count += written
        except DatabaseError as exc:
            logger.warning("Could not record %d run(s) dropped before their start (%s)", len(waiting), exc)
            with self._lock:
                self._not_started = waiting + self._not_started
        return count

    def warm_up(self) -> None:
        """Start every thread of the pool now, not as the first runs come (each would wait for one)."""
        self._pool.start_all()

    @property
    def running(self) -> int:
        """Runs handed to the pool (a submission's fires count as one) and not ended."""
        return self._pool.unfinished

    @property
    def reserved(self) -> dict[str, int]:
        """Runs of each job reserved here and not ended."""
        with self._lock:
            return dict(self._running)


@dataclass(frozen=True)
class RunControl:
    """What bounds the runs of one submission: where they are registered, and their timeout."""

    live: LiveRuns
    timeout: int | None = None
    stoppable: bool = False  # a child process is stopped at its deadline; a thread only flagged
    traceparent: str | None = None  # the dispatch's trace context, for the runs' spans
    observing: bool = True  # an observer was enabled at the dispatch (else the runs skip the look)


def run_job(
    job: Job,
    run_times: list[datetime],
    recorder: Recorder,
    origin: Origin = SCHEDULED,
    executions: list[Execution] | None = None,
    caller: Caller = call_here,
    control: RunControl | None = None,
) -> None:
    """Run one job for each of its due fire times, recording each.

    ``executions`` are the fires' rows when they were recorded as running already.
    """
    try:
        for number, run_time in enumerate(run_times):
            # Like a request: stale or broken connections are replaced before each run, and
            # CONN_MAX_AGE decides whether they are kept after it.
            close_old_connections()
            execution = executions[number] if executions else None
            _run_once(job, run_time, recorder, origin, execution, caller, control or RunControl(LiveRuns()))
    finally:
        close_old_connections()


def _run_once(
    job: Job,
    run_time: datetime,
    recorder: Recorder,
    origin: Origin,
    execution: Execution | None,
    caller: Caller,
    control: RunControl,
) -> None:
    message = missed_message(datetime.now(UTC) - run_time, job.misfire_grace_time)
    # A retry starts after its backoff, and a queued fire after the run it waited for, late by
    # design: the misfire rule is for a fire's first attempt, when it fell due.
    first = execution is None or (execution.attempt == 1 and not execution.queued)
    if message is not None and origin == SCHEDULED and first:
        logger.warning("Job %s missed its run at %s: %s", job.id, run_time, message)
        if execution is None:
            missed = recorder.record_not_run(job.id, [run_time], Execution.Status.MISSED, message)
        else:
            outcome = Outcome(Execution.Status.MISSED, None, timezone.now(), None, message)
            _finish(recorder, execution, outcome, signals.job_missed)
            missed = [execution]
        for row in missed:
            notify(signals.job_missed, row)
        return
    if execution is None:
        execution = recorder.start(job.id, run_time, origin)
        if execution is None:
            return
    if execution.started_at is None:  # claimed ahead of its time (see runs.holding): it starts now
        execution.started_at = timezone.now()
        recorder.started(execution)
    notify(signals.job_started, execution)
    live = control.live.start(execution, control.timeout, control.stoppable)
    token = context.current.set(execution)
    try:
        facts = facts_for(job, control.timeout, control.traceparent, control.observing)
        outcome = cancelled(caller(job, execution, live, facts), live)
    except RunAbandoned as exc:
        logger.info("Job %s: %s", job.id, exc)
        return
    finally:
        context.current.reset(token)
        control.live.end(live)
    signal = signals.job_succeeded if outcome.status == Execution.Status.SUCCEEDED else signals.job_failed
    _finish(recorder, execution, outcome, signal)
    notify(signal, execution)


def cancelled(outcome: Outcome, live: LiveRun) -> Outcome:
    """The outcome of a run someone asked to cancel: *cancelled, by whom*, however it ended."""
    if not live.cancel.is_set() or outcome.status in (Execution.Status.CANCELLED, Execution.Status.TIMED_OUT):
        return outcome
    ended = dict(Execution.Status.choices)[outcome.status].lower()
    message = f"Cancelled by {live.cancelled_by or 'a script'}; the job returned ({ended}) after the request"
    return replace(outcome, status=Execution.Status.CANCELLED, exception=message)


def _finish(recorder: Recorder, execution: Execution, outcome: Outcome, signal: Signal) -> None:
    # A receiver of the signal that follows may read the row: then it must be on disk first.
    # ``receivers`` first: has_listeners takes the signal's lock, which every job thread shares.
    wait = bool(signal.receivers) and signal.has_listeners(sender=execution.job_id)
    recorder.finish(execution, outcome, wait=wait)
    execution.status, execution.finished_at, execution.duration = (
        outcome.status,
        outcome.finished_at,
        outcome.duration,
    )
    execution.exception, execution.traceback = outcome.exception, outcome.traceback
    if outcome.started_at is not None:
        execution.started_at = outcome.started_at
