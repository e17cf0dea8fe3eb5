"""Writing the outcomes of runs: in one UPDATE per batch, on one thread, kept until written.

A run is on disk as "running" before it starts; its outcome only has to reach the database soon
after it ends. Writing the outcomes that queued up meanwhile in one UPDATE turns a statement per
run into one per batch when many runs end together, and keeps the job threads free of history
writes. A crash loses only the outcomes still queued (as a crash between a run's end and its
write always could): those runs stay "running" and are recorded as interrupted, never lost.
Outcomes the database refuses for longer than finish_all's retries are kept and tried again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import connections

from scheduling.history.attempts import retry_times
from scheduling.history.retry import retrying
from scheduling.history.rows import Outcome, storable
from scheduling.models import RUNNING_STATES, Execution
from scheduling.sql import update_rows

OUTCOME_FIELDS = ["status", "started_at", "finished_at", "duration", "exception", "traceback", "output"]
FINISHED_FIELDS = [*OUTCOME_FIELDS, "retry_at"]
# A run that fails once a cancel was asked for is written cancelled, never retried: the cancel
# may be what made it fail (a thread job that stops by raising, a child stopped mid-write), and
# the run's own process may not have seen the request yet. Decided in the UPDATE itself, from
# the row as it is written, so a request made a moment before the outcome costs no extra read.
CANCEL_WINS = {
    "status": "CASE WHEN {table}.cancel_requested_at IS NOT NULL AND {value} = 'failed' "
    "THEN 'cancelled' ELSE {value} END",
    "retry_at": "CASE WHEN {table}.cancel_requested_at IS NULL THEN {value} END",
}

logger = logging.getLogger(__name__)


def finish_all(finished: list[tuple[Execution, Outcome]]) -> int:
    """Write the outcomes of many runs in one UPDATE; returns the rows changed.

    Conditioned on "running", so a run recorded as interrupted (the scheduler stopped, a standby
    took over) stays so; what became of it is kept beside, in ``late_outcome``, and logged. A
    failed run with attempts left gets its next attempt's time in the same statement (see
    scheduling.history.attempts), so no failure is written without its retry — unless a cancel
    was asked for: then it is written cancelled, without one (CANCEL_WINS).
    """
    retry_at: dict[int, Any] = {}

    def write() -> int:
        # The policies' read goes with the UPDATE under retrying(): a broken connection is
        # replaced for both, as for any history write.
        retry_at.clear()
        retry_at.update(retry_times(finished))
        rows = [
            (
                execution.pk,
                {name: _storable(getattr(outcome, name)) for name in OUTCOME_FIELDS}
                | {"retry_at": retry_at.get(execution.pk)},
            )
            for execution, outcome in finished
        ]
        # In SQL, the conditions of Execution.objects.running() here and .interrupted() below.
        return update_rows(
            Execution,
            rows,
            FINISHED_FIELDS,
            "AND status IN (%s, %s)",
            [state.value for state in RUNNING_STATES],
            expressions=CANCEL_WINS,
        )

    written = retrying(write, f"record the outcome of {len(finished)} run(s)")
    for execution, _ in finished:
        execution.retry_at = retry_at.get(execution.pk)
    if written < len(finished):
        _keep_late_outcomes(finished)
    return written


def write_starts(started: list[Execution]) -> int:
    """Write the start of runs claimed ahead of their time, in one UPDATE; returns rows changed.

    Only a row still running without a start takes it: an outcome written first carries the
    start already, and a run recorded interrupted meanwhile stays so.
    """
    rows = [(execution.pk, {"started_at": execution.started_at}) for execution in started]
    return retrying(
        lambda: update_rows(
            Execution,
            rows,
            ["started_at"],
            "AND status IN (%s, %s) AND started_at IS NULL",
            [state.value for state in RUNNING_STATES],
        ),
        f"record the start of {len(rows)} run(s)",
    )


def _storable(value: Any) -> Any:
    return storable(value) if isinstance(value, str) else value


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
    rows = Execution.objects.filter(pk__in=outcomes).interrupted().only("pk", "job_id")
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
        "exception": storable(outcome.exception),
        "traceback": storable(outcome.traceback),
    }


MAX_BATCH = 500  # outcomes per UPDATE
# While runs keep ending, a batch is written at most this often: what ends meanwhile waits for
# it. Written at each wake-up instead, 1,000 runs starting in the same second made 50 UPDATEs of
# a few rows, each taking the interpreter's lock from the threads starting the others. A lone
# outcome (none written for this long) goes at once; a full batch is followed at once.
BUSY_INTERVAL = 0.1  # seconds
RETRY_INTERVAL = 5.0  # seconds between attempts to write outcomes the database refused
# A run claimed ahead of its time has its start written this long after it, when its outcome
# (which carries the start too) has not come by then: most runs are shorter, and cost nothing more.
START_DELAY = 0.5  # seconds


@dataclass(frozen=True)
class _Finished:
    execution: Execution
    outcome: Outcome
    written: threading.Event | None


@dataclass(frozen=True)
class _Started:
    execution: Execution
    due: float  # monotonic: when its start is written if no outcome came


class OutcomeWriter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Finished | _Started | None] = queue.SimpleQueue()
        # Starts of runs claimed ahead, by execution, waiting for START_DELAY or their outcome.
        self._starts: dict[int, _Started] = {}
        # Outcomes whose write failed past finish_all's own retries (a long outage): written
        # with the next batch, or on their own every RETRY_INTERVAL, for as long as the process lives.
        self._pending: list[_Finished] = []
        # Set by stop: a run that ends after it (one still going past the shutdown timeout)
        # writes its own outcome, for no thread is left to write it or to wake a run waiting.
        self._closed = False
        self._closing = threading.Lock()
        self._last_batch = 0.0  # monotonic: when the last outcomes were written
        self._backlog = False  # the last batch was full: more were waiting
        # Set when an awaited outcome is queued: cuts the busy pause short, for its run waits.
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduling-history", daemon=True)
        self._thread.start()

    def finish(self, execution: Execution, outcome: Outcome, wait: bool = False) -> None:
        """Queue a run's outcome; with ``wait``, return once it is on disk (or given up for now)."""
        written = threading.Event() if wait else None
        item = _Finished(execution, outcome, written)  # made outside the lock every job thread takes
        with self._closing:
            queued = not self._closed
            if queued:
                self._queue.put(item)
        if not queued:
            finish_all([(execution, outcome)])
            return
        if written is not None:
            self._hurry.set()
            written.wait()

    def started(self, execution: Execution) -> None:
        """Queue the start of a run claimed ahead: written after START_DELAY unless its outcome
        came first (every start still waiting is written on stop)."""
        item = _Started(execution, time.monotonic() + START_DELAY)
        with self._closing:
            queued = not self._closed
            if queued:
                self._queue.put(item)
        if not queued:
            write_starts([execution])

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        with self._closing:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    @property
    def pending(self) -> int:
        """Outcomes not yet on disk because the database refused them."""
        return len(self._pending)

    def _loop(self) -> None:
        try:
            stopping = False
            while not stopping:
                try:
                    first = self._queue.get(timeout=self._timeout())
                except queue.Empty:
                    self._write([])
                    continue
                if first is None:
                    self._write([], every_start=True)
                    break
                batch, stopping = self._collect(first)
                self._write(batch, every_start=stopping)
        finally:
            connections.close_all()

    def _timeout(self) -> float | None:
        waits = [RETRY_INTERVAL] if self._pending else []
        if self._starts:
            waits.append(max(min(item.due for item in self._starts.values()) - time.monotonic(), 0))
        return min(waits, default=None)

    def _write_starts(self, every: bool) -> None:
        now = time.monotonic()
        due = [item for item in self._starts.values() if every or item.due <= now]
        for item in due:
            del self._starts[item.execution.pk]
        if not due:
            return
        try:
            write_starts([item.execution for item in due])
        # The outcome carries the start too: a start the database refused is only late.
        except Exception:
            logger.exception("Could not record the start of %d run(s)", len(due))

    @staticmethod
    def _one_by_one(items: list[_Finished]) -> list[_Finished]:
        """Write a refused batch's outcomes each alone, so that one the database will not take
        holds back only itself; returns those still refused."""
        refused = []
        for item in items:
            try:
                finish_all([(item.execution, item.outcome)])
            # The same as the batch's: this one waits for the next attempt.
            except Exception:
                refused.append(item)
        return refused

    def _collect(self, first: _Finished | _Started) -> tuple[list[_Finished | _Started], bool]:
        # What queued up while the last batch was written goes in this one, so batches grow with
        # the load; while busy, what ends within BUSY_INTERVAL of the last batch joins too.
        pause = self._last_batch + BUSY_INTERVAL - time.monotonic()
        awaited = isinstance(first, _Finished) and first.written is not None  # a receiver reads the row
        if pause > 0 and not self._backlog and not awaited:
            # Only an awaited outcome wakes the pause: waking for every one would take the
            # interpreter's lock once per run again. It is in the queue before the flag is set.
            self._hurry.wait(pause)
        self._hurry.clear()
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        self._backlog = len(batch) >= MAX_BATCH
        return batch, False

    def _write(self, queued: list[_Finished | _Started], every_start: bool = False) -> None:
        batch = []
        for item in queued:
            if isinstance(item, _Started):
                self._starts[item.execution.pk] = item
            else:
                self._starts.pop(item.execution.pk, None)  # its outcome carries its start
                batch.append(item)
        self._write_starts(every_start)
        items, self._pending = [*self._pending, *batch], []
        if not items:
            return
        self._last_batch = time.monotonic()
        try:
            finish_all([(item.execution, item.outcome) for item in items])
        # finish_all retries while the database is away; past that, the outcomes wait here for
        # the next attempt, and this thread must live on for the next batch.
        except Exception:
            logger.exception(
                "Could not record the outcome of %d run(s); they stay running in the history until "
                "the database takes them (retried every %g s)",
                len(items),
                RETRY_INTERVAL,
            )
            self._pending = self._one_by_one(items) if len(items) > 1 else items
        finally:
            for item in batch:
                if item.written is not None:
                    item.written.set()
