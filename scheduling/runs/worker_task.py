"""Runs in Django's tasks framework: the scheduler enqueues a fire, a worker on any machine runs it.

The scheduler stays the one source of timing and history: at each fire it writes the run as
"enqueued" and enqueues :func:`run_scheduled_job` with the run's id, on the job's backend and
queue. The worker that takes the task marks the same row running (with its host and process),
calls the job's function and records the outcome there. Any backend works (django-tasks-db's
``db_worker``, RQ, Celery…). The task carries only the run's id: what to call is read from our
tables (:mod:`scheduling.runs.task_calls`), so a forged or replayed task runs nothing.

Imported only when a job is placed in task workers: Django 6 has ``django.tasks``; on Django 5.2
the ``django-tasks`` backport provides the same API.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from apscheduler.job import Job
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from scheduling import context, signals
from scheduling.history.rows import Outcome, missed_message
from scheduling.history.writer import finish_all
from scheduling.models import Execution, maintenance_in_force
from scheduling.placement import Placement, RunsIn
from scheduling.runs import task_calls
from scheduling.runs.call import call_job
from scheduling.runs.live import LiveRuns
from scheduling.runs.observers import RunFacts, facts_from
from scheduling.runs.processes import ProcessPool
from scheduling.runs.threads import cancelled
from scheduling.signals import notify
from scheduling.store import policies_of

if TYPE_CHECKING:
    from django.tasks import Task, TaskContext, task, task_backends
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend
else:
    try:
        from django.tasks import TaskContext, task, task_backends
        from django.tasks.exceptions import InvalidTask, InvalidTaskBackend
    except ImportError:  # Django < 6: the django-tasks backport, same API
        from django_tasks import TaskContext, task, task_backends
        from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
        from django_tasks.exceptions import InvalidTaskError as InvalidTask

    Task = Any

logger = logging.getLogger(__name__)


CANCEL_CHECK_INTERVAL = 1.0  # seconds between looks for a cancel request of the run going on

# A worker that lost the race to another (a task delivered twice at once) or to the timeout.
TAKEN_MEANWHILE = "Not run: its run left the enqueued state while this worker was taking it"


class JobRunFailed(Exception):
    """Raised by the task when the job failed, so the tasks backend records the task as failed too."""


@task(takes_context=True)
def run_scheduled_job(context: TaskContext, execution_id: int, *legacy: Any) -> str:
    """Run the fire recorded as execution ``execution_id`` (enqueued by the scheduler).

    ``legacy`` is what tasks enqueued by earlier versions carried (the job's function and
    arguments): accepted, so they still run, and ignored, since a payload is not to be trusted.
    """
    close_old_connections()
    outcome = run_enqueued(execution_id, str(context.task_result.id))
    if isinstance(outcome, str):
        return outcome
    if outcome.status == Execution.Status.FAILED:
        raise JobRunFailed(outcome.exception)
    return outcome.status


def run_enqueued(execution_id: int, task_id: str) -> Outcome | str:
    """Take an enqueued run, call its job and record the outcome; if it was not ours to run, why."""
    execution = _enqueued(execution_id)
    if isinstance(execution, str):
        # Expired by SCHEDULING_TASK_TIMEOUT, deleted, a backend delivering the task twice, or forged.
        logger.warning("Task %s not run: %s", task_id, execution)
        return execution
    try:
        call, function = task_calls.call_of(execution)
    except task_calls.Refused as exc:
        return _end_unstarted(execution, task_id, Execution.Status.FAILED, str(exc)) or TAKEN_MEANWHILE
    message = missed_message(
        timezone.now() - execution.scheduled_at,
        call.misfire_grace_time,
        started="a worker took it",
        why="it waited in the task queue",
    )
    # A retry starts after its backoff, and a queued fire after the run it waited for, late by
    # design: the misfire rule is for a fire's first attempt, when it fell due.
    first = execution.attempt == 1 and not execution.queued
    if message is not None and execution.origin == Execution.Origin.SCHEDULE and first:
        outcome = _end_unstarted(execution, task_id, Execution.Status.MISSED, message)
        if outcome is None:
            return TAKEN_MEANWHILE
        notify(signals.job_missed, execution)
        return outcome
    # A fire enqueued before a maintenance pause began does not start during it (a run asked for
    # by someone was allowed, or forced, when it was asked for).
    pause = maintenance_in_force() if execution.origin == Execution.Origin.SCHEDULE else None
    if pause is not None:
        return (
            _end_unstarted(execution, task_id, Execution.Status.SKIPPED, pause.skip_message)
            or TAKEN_MEANWHILE
        )
    # Read before the claim: a database error here leaves the run enqueued, for another
    # delivery or SCHEDULING_TASK_TIMEOUT, not "running" with no outcome to come.
    timeout = policies_of([execution.job_id])[execution.job_id].timeout
    if not _claim(execution, task_id):
        return TAKEN_MEANWHILE
    notify(signals.job_started, execution)
    outcome = _call_bounded(execution, call, function, timeout)
    if not finish_all([(execution, outcome)]):
        logger.warning(
            "Job %s %s, but its run had been recorded as interrupted meanwhile (SCHEDULING_TASK_TIMEOUT)",
            execution.job_id,
            outcome.status,
        )
    execution.status = outcome.status
    notify(
        signals.job_succeeded if outcome.status == Execution.Status.SUCCEEDED else signals.job_failed,
        execution,
    )
    return outcome


def _call_bounded(
    execution: Execution, call: task_calls.Call, function: Callable[..., Any], timeout: int | None
) -> Outcome:
    """Call the job, within its ``timeout`` (seconds, or None) and open to a cancel.

    A job with a timeout runs in a child process of this worker, stopped at the deadline or on a
    cancel like a run in the scheduler's process pool; any other run is called here, where it
    can only be told (``current_run().cancel_requested``). A thread of this worker looks for a
    cancel request once a second while the run goes on.
    """
    facts = _facts(execution, call, timeout)
    live_runs = LiveRuns()
    live = live_runs.start(execution, timeout, stoppable=timeout is not None)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(live_runs, done), name="scheduling-run-watch", daemon=True
    )
    watcher.start()
    token = context.current.set(execution)
    try:
        if timeout is None:
            outcome = call_job(execution.job_id, function, call.args, call.kwargs, facts)
        else:
            pool = ProcessPool(1)
            try:
                outcome = pool.call(
                    execution.job_id, call.func_ref, call.args, call.kwargs, execution, live, facts
                )
            finally:
                pool.shutdown()
    finally:
        context.current.reset(token)
        done.set()
        watcher.join()
        live_runs.end(live)
    return cancelled(outcome, live)


def _facts(execution: Execution, call: task_calls.Call, timeout: int | None) -> RunFacts | None:
    """What the run's observers need: the job's trigger as the store holds it (read already, for
    the call), and the dispatch's trace context from the frozen call on the run's row."""
    traceparent = (execution.call or {}).get(task_calls.TRACEPARENT)
    return facts_from(execution.job_id, call.trigger, call.misfire_grace_time, timeout, traceparent)


def _watch(live_runs: LiveRuns, done: threading.Event) -> None:
    while not done.wait(CANCEL_CHECK_INTERVAL):
        try:
            live_runs.check()
        # The run goes on whatever the database says; the next look may get through.
        except DatabaseError as exc:
            logger.warning("Could not look for a cancel request: %s", exc)
    connections.close_all()  # this thread's own connection, which would otherwise outlive it


def _enqueued(execution_id: object) -> Execution | str:
    """The run ``execution_id`` if it waits for a worker, else why this task may not run it."""
    # A forged payload may carry anything; only a whole number can name a run.
    if not isinstance(execution_id, int) or isinstance(execution_id, bool):
        return f"Not run: {execution_id!r} is not an execution id"
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is None:
        return f"Not run: there is no execution {execution_id}"
    if execution.ran_in != RunsIn.TASKS or execution.status != Execution.Status.ENQUEUED:
        return (
            f"Not run: execution {execution_id} ({execution.job_id}) is {execution.status} in "
            f"{execution.ran_in}, not enqueued for a task worker"
        )
    return execution


def _claim(execution: Execution, task_id: str) -> bool:
    """Mark the run as running here; False if someone else changed it first."""
    execution.started_at = timezone.now()
    execution.hostname, execution.pid = socket.gethostname(), os.getpid()
    execution.task_id = execution.task_id or task_id
    claimed = Execution.objects.filter(pk=execution.pk).claim(
        execution.task_id, execution.hostname, execution.pid, execution.started_at
    )
    execution.status = Execution.Status.RUNNING
    return claimed


def _end_unstarted(
    execution: Execution, task_id: str, status: str, message: str, formatted: str = ""
) -> Outcome | None:
    now = timezone.now()
    changed = Execution.objects.filter(pk=execution.pk).end_unstarted(
        status,
        message,
        formatted,
        finished_at=now,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        task_id=execution.task_id or task_id,
    )
    if not changed:
        return None
    # A failure may page someone (AdminEmailHandler); a miss or a skip is a warning.
    (logger.error if status == Execution.Status.FAILED else logger.warning)(
        "Job %s: %s", execution.job_id, message
    )
    execution.status, execution.exception = status, message
    return Outcome(status, None, now, None, message, formatted)


@cache
def _task(backend: str, queue: str) -> Task:
    return run_scheduled_job.using(backend=backend, queue_name=queue)


def enqueue(execution: Execution, job: Job) -> str:
    """Hand a run of ``job`` recorded as enqueued to the tasks framework; returns the task's id."""
    placement = Placement.of(job.executor)
    return str(_task(placement.backend, placement.queue).enqueue(execution.pk).id)


def check_placement(placement: Placement) -> None:
    """Raise ValueError, naming the problem, if runs cannot be enqueued there to run on workers."""
    try:
        _task(placement.backend, placement.queue)
    except InvalidTaskBackend as exc:
        configured = ", ".join(map(repr, task_backends.settings))
        raise ValueError(
            f"task_backend {placement.backend!r} is not configured in TASKS ({exc}); configured: {configured}"
        ) from None
    except InvalidTask as exc:
        raise ValueError(
            f"task_queue {placement.queue!r} cannot be used on backend {placement.backend!r}: {exc}"
        ) from None
    # Both ship with Django and have no workers: one would run the job inside the scheduler's loop,
    # blocking every other job; the other never runs it.
    kind = type(task_backends[placement.backend]).__name__
    if kind in NO_WORKERS:
        raise ValueError(
            f"task_backend {placement.backend!r} is Django's {kind}, which {NO_WORKERS[kind]}; "
            "configure a backend with workers (e.g. django-tasks-db), or use runs_in='threads'"
        )


NO_WORKERS = {
    "ImmediateBackend": "runs each task at once inside the scheduler's loop",
    "DummyBackend": "never runs tasks",
}
