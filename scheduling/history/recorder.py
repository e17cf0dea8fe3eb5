"""Recording fires: one row per fire, written "running" (or "enqueued") before the run starts.

Inserts are fenced by the lease (scheduling.fencing) and idempotent per fire, so a scheduler
that lost its lease writes nothing and a retried insert finds its own rows.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import connections, router
from django.db.models.base import ModelState
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduling.fencing import Fence, FenceLost
from scheduling.history.housekeeping import interrupt
from scheduling.history.retry import retrying
from scheduling.history.rows import SCHEDULED, Origin, Outcome
from scheduling.history.writer import OutcomeWriter, finish_all, write_starts
from scheduling.models import HANDED_OVER, Execution, SchedulerInstance
from scheduling.placement import RunsIn
from scheduling.sql import insert_rows

logger = logging.getLogger(__name__)


class Recorder:
    """Writes the history of one scheduler process.

    With an ``outcomes`` writer, outcomes are written in batches on its thread; without, at once.
    """

    def __init__(
        self, instance: SchedulerInstance | None = None, outcomes: OutcomeWriter | None = None
    ) -> None:
        self.instance = instance
        self.outcomes = outcomes
        self.hostname = instance.hostname if instance else socket.gethostname()
        self.pid = instance.pid if instance else os.getpid()
        # A row of this process with every other field at its default, copied for each new row:
        # Model.__init__ visits all 29 fields (23 us a row; copying takes 1), a thousand rows a pass.
        blank = Execution(hostname=self.hostname, pid=self.pid, instance=instance)
        self._blank = {name: value for name, value in vars(blank).items() if name != "_state"}
        self._blank_db = blank._state.db  # set by the instance, as for a row built by the ORM
        # The lease this process holds while it leads: the condition of every row it inserts.
        self.fence: Fence | None = None

    def start(
        self,
        job_id: str,
        scheduled_at: datetime,
        origin: Origin = SCHEDULED,
        ran_in: RunsIn = RunsIn.THREADS,
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
        ran_in: RunsIn = RunsIn.THREADS,
        call: dict[str, Any] | None = None,
    ) -> Execution:
        """A run about to start here, or, placed in task workers, about to be enqueued.

        ``call`` is the frozen copy of the job a task worker runs if the job left the store.
        """
        enqueued = ran_in == RunsIn.TASKS
        now = timezone.now()
        return self._row(
            job_id=job_id,
            status=Execution.Status.ENQUEUED if enqueued else Execution.Status.RUNNING,
            ran_in=ran_in,
            origin=origin.kind,
            requested_by=origin.requested_by,
            args=origin.args,
            kwargs=origin.kwargs,
            scheduled_at=scheduled_at,
            started_at=None if enqueued else now,
            enqueued_at=now if enqueued else None,
            call=call,
        )

    def not_run_row(
        self, job_id: str, scheduled_at: datetime, status: str, message: str, origin: Origin = SCHEDULED
    ) -> Execution:
        """A row for a fire that did not run (missed, skipped)."""
        return self._row(
            job_id=job_id,
            status=status,
            origin=origin.kind,
            requested_by=origin.requested_by,
            args=origin.args,
            kwargs=origin.kwargs,
            scheduled_at=scheduled_at,
            finished_at=timezone.now(),
            exception=message,
        )

    def _row(self, **values: Any) -> Execution:
        """``Execution(**values)`` with this process's hostname, pid and instance, as the ORM
        builds it (a new, unsaved row); ``values`` are plain fields. Its defaults are all
        immutable, so the copies share them safely."""
        row = Execution.__new__(Execution)
        fields = vars(row)
        fields.update(self._blank)
        fields.update(values)
        row._state = ModelState()
        row._state.db = self._blank_db
        if self.instance is not None:
            row._state.fields_cache["instance"] = self.instance
        return row

    def insert(
        self, rows: list[Execution], fence: Fence | None = None, retry: bool = True
    ) -> list[Execution]:
        """Insert many rows, fenced; returns the running (or enqueued) ones that may run, with ids.

        One statement per batch, conditioned on ``fence`` (default: the lease this process holds)
        and skipping the fires that have a row already (a scheduler that took over mid-dispatch
        wrote it): those are left out. Every row carries this call's pass id, so when a reply is
        lost after the rows were committed, the retry recognises them as its own and they run.
        Without ``retry`` (inside a transaction, which a broken connection loses) a database error
        is raised at once.

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

        inserted, returned = retrying(write, f"record {len(rows)} run(s)", None if retry else 0)
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
        ids = {(job_id, _moment_key(moment), attempt): pk for pk, job_id, moment, attempt in returned}
        started = []
        for row in rows:
            pk = ids.get((row.job_id, _moment_key(row.scheduled_at), row.attempt))
            if pk is None:
                if row.status in HANDED_OVER:
                    logger.warning(
                        "Job %s already has an execution for %s (attempt %d); not running it again",
                        row.job_id,
                        row.scheduled_at,
                        row.attempt,
                    )
                continue
            row.pk = pk
            row._state.adding = False
            if row.status in HANDED_OVER:
                started.append(row)
        return started

    def started(self, execution: Execution) -> None:
        """Record the start of a run claimed ahead of its time (its row had none): soon, in a
        batch, unless its outcome, which carries the start too, comes first."""
        if self.outcomes is None:
            write_starts([execution])
        else:
            self.outcomes.started(execution)

    def finish(self, execution: Execution, outcome: Outcome, wait: bool = False) -> None:
        """Record a run's outcome; with ``wait``, return only once it is on disk."""
        if self.outcomes is None:
            finish_all([(execution, outcome)])
        else:
            self.outcomes.finish(execution, outcome, wait)

    def record_not_run(
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
            self.not_run_row(job_id, scheduled_at, status, message, origin)
            for scheduled_at in scheduled_times
        ]
        self.insert(rows)
        return [row for row in rows if row.pk is not None]

    def interrupt_own_runs(self, reason: str) -> int:
        """Mark this process's runs that are still going as interrupted.

        Runs handed to task workers are not this process's: they go on without it.
        """
        runs = Execution.objects.of_instance(self.instance).in_scheduler().running()
        return interrupt(runs, reason, lambda ended, why: ended.mark_interrupted(why))


RETURNED = ("id", "job_id", "scheduled_at", "attempt")  # what identifies an inserted row, read back


def _moment_key(value: datetime | str) -> datetime:
    """A stored moment as comparable across backends: naive, in UTC when time zones are on.

    Raw values read back differ: aware on PostgreSQL, naive UTC on MySQL, text on SQLite.
    """
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        raise ValueError(f"Not a stored datetime: {value!r}")
    return moment.astimezone(UTC).replace(tzinfo=None) if timezone.is_aware(moment) else moment
