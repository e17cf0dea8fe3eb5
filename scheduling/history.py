"""Execution history: one row per fire, written "running" before the job starts, finished after.

Writes are retried while the database is unreachable, because the outcome of a run exists only
in memory until it is on disk.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections
from django.db.models import QuerySet
from django.utils import timezone

from scheduling.bulk import update_rows
from scheduling.conf import settings
from scheduling.models import Execution, SchedulerInstance
from scheduling.placement import TASKS, THREADS

if TYPE_CHECKING:
    from scheduling.finisher import Finisher

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_RETRY_FOR = 300.0  # seconds a history write keeps being retried while the database is away


@dataclass(frozen=True)
class Origin:
    """What started a run: the schedule, or a manual request by someone."""

    kind: str = Execution.Origin.SCHEDULE
    requested_by: str = ""


SCHEDULED = Origin()


@dataclass(frozen=True)
class Outcome:
    status: str
    started_at: datetime | None
    finished_at: datetime
    duration: float | None
    exception: str = ""
    traceback: str = ""


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """The exception as "module.Class: message" and its full traceback, final line included."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return f"{name}: {exc}", "".join(traceback.format_exception(exc))


def retrying(write: Callable[[], T], what: str, retry_for: float = WRITE_RETRY_FOR) -> T:
    """Run a database write, retrying with backoff while the database is unreachable.

    The write must be idempotent or fail cleanly (an insert guarded by a unique constraint, an
    update conditioned on the current status), since an error may come after it took effect.
    """
    deadline = time.monotonic() + retry_for
    delay = 0.2
    while True:
        try:
            return write()
        # Connection trouble only: other errors would fail the same way on every attempt.
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Could not %s (%s); retrying in %.1f s", what, exc, delay)
            close_old_connections()
            time.sleep(delay)
            delay = min(delay * 2, settings.DATABASE_RETRY_MAX)


class Recorder:
    """Writes the history of one scheduler process.

    With a ``finisher``, outcomes are written in batches on its thread; without, at once.
    """

    def __init__(self, instance: SchedulerInstance | None = None, finisher: Finisher | None = None) -> None:
        self.instance = instance
        self.finisher = finisher
        self.hostname = instance.hostname if instance else socket.gethostname()
        self.pid = instance.pid if instance else os.getpid()

    def start(
        self,
        job_id: str,
        scheduled_at: datetime,
        origin: Origin = SCHEDULED,
        ran_in: str = THREADS,
        call: dict[str, Any] | None = None,
    ) -> Execution | None:
        """Record a run as started; None if this fire already has an execution."""
        row = self.running_row(job_id, scheduled_at, origin, ran_in, call)
        try:
            # One INSERT, atomic by itself; a duplicate fails it without touching anything else.
            retrying(row.save, f"record the start of job {job_id}")
        except IntegrityError:
            logger.warning(
                "Job %s already has an execution for %s; not running it again", job_id, scheduled_at
            )
            return None
        return row

    def running_row(
        self,
        job_id: str,
        scheduled_at: datetime,
        origin: Origin = SCHEDULED,
        ran_in: str = THREADS,
        call: dict[str, Any] | None = None,
    ) -> Execution:
        """A run about to start here, or, placed in task workers, about to be enqueued.

        ``call`` is the frozen copy of the job a task worker runs if the job left the store.
        """
        enqueued = ran_in == TASKS
        return Execution(
            job_id=job_id,
            status=Execution.Status.ENQUEUED if enqueued else Execution.Status.RUNNING,
            ran_in=ran_in,
            origin=origin.kind,
            requested_by=origin.requested_by,
            scheduled_at=scheduled_at,
            started_at=None if enqueued else timezone.now(),
            hostname=self.hostname,
            pid=self.pid,
            instance=self.instance,
            call=call,
        )

    def ended_row(
        self, job_id: str, scheduled_at: datetime, status: str, message: str, origin: Origin = SCHEDULED
    ) -> Execution:
        """A row for a fire that did not run (missed, skipped)."""
        return Execution(
            job_id=job_id,
            status=status,
            origin=origin.kind,
            requested_by=origin.requested_by,
            scheduled_at=scheduled_at,
            finished_at=timezone.now(),
            exception=message,
            hostname=self.hostname,
            pid=self.pid,
            instance=self.instance,
        )

    def insert(self, rows: list[Execution]) -> list[Execution]:
        """Insert many rows in one statement; returns the running ones that may run.

        A fire that already has a row (a scheduler that took over mid-dispatch) fails the whole
        statement; then each row goes in on its own and only the duplicates are left out.
        """
        if not rows:
            return []
        # One row goes in with save(): bulk_create() wraps itself in a transaction, two more
        # round trips that a lone statement does not need.
        write = rows[0].save if len(rows) == 1 else lambda: Execution.objects.bulk_create(rows)
        try:
            retrying(write, f"record {len(rows)} run(s)")
        except IntegrityError:
            started = []
            for row in rows:
                if row.status not in UNFINISHED:
                    self.record(row.job_id, [row.scheduled_at], row.status, row.exception)
                elif (
                    execution := self.start(row.job_id, row.scheduled_at, ran_in=row.ran_in, call=row.call)
                ) is not None:
                    started.append(execution)
            return started
        return [row for row in rows if row.status in UNFINISHED]

    def finish(self, execution: Execution, outcome: Outcome, wait: bool = False) -> None:
        """Record a run's outcome; with ``wait``, return only once it is on disk."""
        if self.finisher is None:
            finish_all([(execution, outcome)])
        else:
            self.finisher.finish(execution, outcome, wait)

    def record(
        self,
        job_id: str,
        scheduled_times: Iterable[datetime],
        status: str,
        message: str,
        origin: Origin = SCHEDULED,
    ) -> list[Execution]:
        """Record fires that did not run (missed, skipped), one row each."""
        rows = [
            self.ended_row(job_id, scheduled_at, status, message, origin) for scheduled_at in scheduled_times
        ]
        return retrying(
            lambda: Execution.objects.bulk_create(rows, ignore_conflicts=True),
            f"record {status} runs of job {job_id}",
        )

    def interrupt_own_runs(self, reason: str) -> int:
        """Mark this process's runs that are still going as interrupted.

        Runs handed to task workers are not this process's: they go on without it.
        """
        return mark_interrupted(
            Execution.objects.filter(instance=self.instance).exclude(ran_in=TASKS), reason
        )


UNFINISHED = (Execution.Status.ENQUEUED, Execution.Status.RUNNING)

FINISHED_FIELDS = ["status", "started_at", "finished_at", "duration", "exception", "traceback"]


def finish_all(finished: list[tuple[Execution, Outcome]]) -> int:
    """Write the outcomes of many runs in one UPDATE; returns the rows changed.

    Conditioned on "running", so a run recorded as interrupted at shutdown stays so.
    """
    rows = [
        (execution.pk, {name: getattr(outcome, name) for name in FINISHED_FIELDS})
        for execution, outcome in finished
    ]
    return retrying(
        lambda: update_rows(
            Execution, rows, FINISHED_FIELDS, "AND status = %s", [Execution.Status.RUNNING.value]
        ),
        f"record the outcome of {len(rows)} run(s)",
    )


def mark_interrupted(executions: QuerySet[Execution], reason: str) -> int:
    return executions.filter(status=Execution.Status.RUNNING).update(
        status=Execution.Status.INTERRUPTED, finished_at=timezone.now(), exception=reason
    )


def recover_interrupted() -> int:
    """Mark runs left "running" by schedulers that are gone as interrupted."""
    alive = [
        instance.pk
        for instance in SchedulerInstance.objects.alive()
        if instance.hostname != socket.gethostname() or process_alive(instance.pid)
    ]
    # Runs handed to task workers are the workers' own: expire_task_runs deals with those.
    orphans = Execution.objects.exclude(instance__in=alive).exclude(ran_in=TASKS)
    count = mark_interrupted(orphans, "Interrupted: the scheduler running it stopped without finishing it")
    if count:
        logger.warning("Marked %d run(s) left running by a stopped scheduler as interrupted", count)
    return count


def expire_task_runs(timeout: float | None = None) -> int:
    """Record runs handed to task workers and not heard of for ``timeout`` seconds as interrupted.

    Enqueued runs count from their fire time (no worker took them), running ones from their
    start (the worker that took them died, or lost its database). A worker that takes an expired
    run later leaves it alone.
    """
    timeout = settings.TASK_TIMEOUT if timeout is None else timeout
    cutoff = timezone.now() - timedelta(seconds=timeout)
    waiting = Execution.objects.filter(
        ran_in=TASKS, status=Execution.Status.ENQUEUED, scheduled_at__lt=cutoff
    ).update(
        status=Execution.Status.INTERRUPTED,
        finished_at=timezone.now(),
        exception=f"Interrupted: no task worker took the run within {timeout:g} s (SCHEDULING_TASK_TIMEOUT)",
    )
    running = Execution.objects.filter(
        ran_in=TASKS, status=Execution.Status.RUNNING, started_at__lt=cutoff
    ).update(
        status=Execution.Status.INTERRUPTED,
        finished_at=timezone.now(),
        exception=(
            f"Interrupted: the task worker running it sent no outcome within {timeout:g} s of its start "
            "(SCHEDULING_TASK_TIMEOUT); it died, or its run takes longer than that"
        ),
    )
    if waiting or running:
        logger.warning(
            "Recorded %d run(s) in task workers as interrupted: %d never taken, %d never finished",
            waiting + running,
            waiting,
            running,
        )
    return waiting + running


def process_alive(pid: int) -> bool:
    """Whether a process of this host is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(older_than: timedelta | None = None, batch_size: int | None = None) -> int:
    """Delete finished history older than the retention, in batches; returns rows deleted."""
    cutoff = timezone.now() - (older_than or settings.HISTORY_RETENTION)
    batch_size = batch_size or settings.PRUNE_BATCH_SIZE
    old = Execution.objects.filter(scheduled_at__lt=cutoff).exclude(status__in=UNFINISHED)
    deleted = 0
    while True:
        # Materialised ids: MySQL cannot DELETE ... WHERE id IN (SELECT ... LIMIT n).
        ids = list(old.order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        deleted += Execution.objects.filter(pk__in=ids).delete()[0]
    SchedulerInstance.objects.filter(stopped_at__lt=cutoff).delete()
    if deleted:
        logger.info("Pruned %d execution(s) older than %s", deleted, cutoff.isoformat())
    return deleted
