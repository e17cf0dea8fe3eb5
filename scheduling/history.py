"""Execution history: one row per fire, written "running" before the job starts, finished after.

Writes are retried while the database is unreachable, because the outcome of a run exists only
in memory until it is on disk.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connections, router
from django.db.models import Count, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduling import identity
from scheduling.bulk import insert_rows, update_rows
from scheduling.conf import settings
from scheduling.fencing import Fence, FenceLost
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


def missed_message(lateness: timedelta, grace: float | None) -> str | None:
    """Why a run ``lateness`` late must not start, or None when it may (the misfire rule).

    Compared as seconds, not as a timedelta: a grace of any size must not overflow.
    """
    if grace is None or lateness.total_seconds() <= grace:
        return None
    return f"Missed: started {lateness.total_seconds():.1f} s late, after its misfire grace time of {grace} s"


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """The exception as "module.Class: message" and its full traceback, final line included."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return f"{name}: {exc}", "".join(traceback.format_exception(exc))


def retrying(write: Callable[[], T], what: str, retry_for: float | None = None) -> T:
    """Run a database write, retrying with backoff while the database is unreachable.

    The write must be idempotent or fail cleanly (an insert guarded by a unique constraint, an
    update conditioned on the current status), since an error may come after it took effect.
    """
    deadline = time.monotonic() + (WRITE_RETRY_FOR if retry_for is None else retry_for)
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
        # The lease this process holds while it leads: the condition of every row it inserts.
        self.fence: Fence | None = None

    def start(
        self,
        job_id: str,
        scheduled_at: datetime,
        origin: Origin = SCHEDULED,
        ran_in: str = THREADS,
        call: dict[str, Any] | None = None,
    ) -> Execution | None:
        """Record a run as started; None if this fire already has an execution."""
        started = self.insert([self.running_row(job_id, scheduled_at, origin, ran_in, call)])
        return started[0] if started else None

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

    def insert(self, rows: list[Execution], fence: Fence | None = None) -> list[Execution]:
        """Insert many rows, fenced; returns the running (or enqueued) ones that may run, with ids.

        One statement per batch, conditioned on ``fence`` (default: the lease this process holds)
        and skipping the fires that have a row already (a scheduler that took over mid-dispatch
        wrote it): those are left out. Every row carries this call's pass id, so when a reply is
        lost after the rows were committed, the retry recognises them as its own and they run.

        :raises FenceLost: when no row went in because the lease is no longer this process's.
        """
        if not rows:
            return []
        fence = fence or self.fence
        pass_id = secrets.randbits(63)
        for row in rows:
            row.pass_id = pass_id
        connection = connections[router.db_for_write(Execution)]
        condition = fence.sql() if fence is not None else ("1 = 1", [])
        size = max(connection.ops.bulk_batch_size(Execution._meta.concrete_fields, rows), 1)
        attempts = 0

        def write() -> tuple[int, list[tuple[Any, ...]]]:
            nonlocal attempts
            attempts += 1
            inserted, returned = 0, list[tuple[Any, ...]]()
            for start in range(0, len(rows), size):
                count, got = insert_rows(rows[start : start + size], condition, RETURNED)
                inserted, returned = inserted + count, returned + got
            return inserted, returned

        inserted, returned = retrying(write, f"record {len(rows)} run(s)")
        if attempts > 1 or not connection.features.can_return_rows_from_bulk_insert:
            # An earlier attempt may have committed (its reply lost): what is on disk decides.
            returned = list(
                Execution.objects.filter(
                    pass_id=pass_id, job_id__in={row.job_id for row in rows}
                ).values_list(*RETURNED)
            )
            inserted = len(returned)
        if not inserted and fence is not None and not fence.holds():
            raise FenceLost(fence, f"record {len(rows)} run(s)")
        ids = {(job_id, _moment_key(moment)): pk for pk, job_id, moment in returned}
        started = []
        for row in rows:
            pk = ids.get((row.job_id, _moment_key(row.scheduled_at)))
            if pk is None:
                if row.status in UNFINISHED:
                    logger.warning(
                        "Job %s already has an execution for %s; not running it again",
                        row.job_id,
                        row.scheduled_at,
                    )
                continue
            row.pk = pk
            row._state.adding = False
            if row.status in UNFINISHED:
                started.append(row)
        return started

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
        """Record fires that did not run (missed, skipped), one row each, fenced like any insert;
        returns the rows recorded now (a fire that had a row already is left out)."""
        rows = [
            self.ended_row(job_id, scheduled_at, status, message, origin) for scheduled_at in scheduled_times
        ]
        self.insert(rows)
        return [row for row in rows if row.pk is not None]

    def interrupt_own_runs(self, reason: str) -> int:
        """Mark this process's runs that are still going as interrupted.

        Runs handed to task workers are not this process's: they go on without it.
        """
        return mark_interrupted(
            Execution.objects.filter(instance=self.instance).exclude(ran_in=TASKS), reason
        )


UNFINISHED = (Execution.Status.ENQUEUED, Execution.Status.RUNNING)

RETURNED = ("id", "job_id", "scheduled_at")  # what identifies an inserted row, read back


def _moment_key(value: datetime | str) -> datetime:
    """A stored moment as comparable across backends: naive, in UTC when time zones are on.

    Raw values read back differ: aware on PostgreSQL, naive UTC on MySQL, text on SQLite.
    """
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        raise ValueError(f"Not a stored datetime: {value!r}")
    return moment.astimezone(UTC).replace(tzinfo=None) if timezone.is_aware(moment) else moment


FINISHED_FIELDS = ["status", "started_at", "finished_at", "duration", "exception", "traceback"]


def finish_all(finished: list[tuple[Execution, Outcome]]) -> int:
    """Write the outcomes of many runs in one UPDATE; returns the rows changed.

    Conditioned on "running", so a run recorded as interrupted (the scheduler stopped, a standby
    took over) stays so; what became of it is kept beside, in ``late_outcome``, and logged.
    """
    rows = [
        (execution.pk, {name: getattr(outcome, name) for name in FINISHED_FIELDS})
        for execution, outcome in finished
    ]
    written = retrying(
        lambda: update_rows(
            Execution, rows, FINISHED_FIELDS, "AND status = %s", [Execution.Status.RUNNING.value]
        ),
        f"record the outcome of {len(rows)} run(s)",
    )
    if written < len(rows):
        _keep_late_outcomes(finished)
    return written


def _keep_late_outcomes(finished: list[tuple[Execution, Outcome]]) -> None:
    late = [(execution.pk, {"late_outcome": _as_json(outcome)}) for execution, outcome in finished]
    kept = retrying(
        lambda: update_rows(
            Execution,
            late,
            ["late_outcome"],
            "AND status = %s AND late_outcome IS NULL",
            [Execution.Status.INTERRUPTED.value],
        ),
        f"keep the late outcome of {len(late)} run(s)",
    )
    if not kept:
        return
    outcomes = {execution.pk: outcome for execution, outcome in finished}
    rows = Execution.objects.filter(pk__in=outcomes, status=Execution.Status.INTERRUPTED).only("pk", "job_id")
    for row in rows:
        logger.warning(
            "Run %s of job %s ended (%s) after it had been recorded interrupted; kept as its late outcome",
            row.pk,
            row.job_id,
            outcomes[row.pk].status,
        )


def _as_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "started_at": outcome.started_at.isoformat() if outcome.started_at else None,
        "finished_at": outcome.finished_at.isoformat(),
        "duration": outcome.duration,
        "exception": outcome.exception,
        "traceback": outcome.traceback,
    }


def mark_interrupted(executions: QuerySet[Execution], reason: str) -> int:
    return executions.filter(status=Execution.Status.RUNNING).update(
        status=Execution.Status.INTERRUPTED, finished_at=timezone.now(), exception=reason
    )


def recover_interrupted() -> int:
    """Mark runs left "running" by schedulers that are gone as interrupted."""
    # Beating, and not proven dead: a scheduler in another container may have a pid that means
    # nothing here (see scheduling.identity); it is taken for dead only once its heartbeat stops.
    alive = [
        instance.pk for instance in SchedulerInstance.objects.alive() if not identity.scheduler_dead(instance)
    ]
    # A process of this host whose heartbeat stopped but which still exists is frozen (SIGSTOP,
    # swapped out), not dead: its runs go on when it wakes, so they are not interrupted.
    alive += [instance.pk for instance in _local_unstopped() if identity.proven_alive(instance)]
    # Runs handed to task workers are the workers' own: expire_task_runs deals with those.
    orphans = Execution.objects.exclude(instance__in=alive).exclude(ran_in=TASKS)
    count = mark_interrupted(orphans, "Interrupted: the scheduler running it stopped without finishing it")
    if count:
        logger.warning("Marked %d run(s) left running by a stopped scheduler as interrupted", count)
    return count


def _local_unstopped() -> QuerySet[SchedulerInstance]:
    me = identity.current()
    if me is None:
        return SchedulerInstance.objects.none()
    return SchedulerInstance.objects.filter(
        stopped_at__isnull=True, boot_id=me.boot_id, pid_namespace=me.pid_namespace
    ).exclude(last_beat__gte=timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT))


def running_elsewhere(instance: SchedulerInstance | None) -> dict[str, int]:
    """Runs still running in other schedulers' threads or pools, by job id.

    A scheduler taking over counts them against ``max_instances``: the one it took over from may
    be frozen, or stopping, with a run of the job still going.
    """
    rows = (
        Execution.objects.filter(status=Execution.Status.RUNNING)
        .exclude(instance=instance)
        .exclude(ran_in=TASKS)
        .values_list("job_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return dict(rows)


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
