"""Outcomes of runs, written to the history in batches by one thread.

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
from dataclasses import dataclass

from django.db import connections

from scheduling.history import Outcome, finish_all
from scheduling.models import Execution

logger = logging.getLogger(__name__)

MAX_BATCH = 500  # outcomes per UPDATE
RETRY_INTERVAL = 5.0  # seconds between attempts to write outcomes the database refused


@dataclass(frozen=True)
class _Finished:
    execution: Execution
    outcome: Outcome
    written: threading.Event | None


class Finisher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        # Outcomes whose write failed past finish_all's own retries (a long outage): written
        # with the next batch, or on their own every RETRY_INTERVAL, for as long as the process lives.
        self._pending: list[_Finished] = []
        self._thread = threading.Thread(target=self._loop, name="scheduling-history", daemon=True)
        self._thread.start()

    def finish(self, execution: Execution, outcome: Outcome, wait: bool = False) -> None:
        """Queue a run's outcome; with ``wait``, return once it is on disk (or given up for now)."""
        written = threading.Event() if wait else None
        self._queue.put(_Finished(execution, outcome, written))
        if written is not None:
            written.wait()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
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
                    first = self._queue.get(timeout=RETRY_INTERVAL if self._pending else None)
                except queue.Empty:
                    self._write([])
                    continue
                if first is None:
                    self._write([])
                    break
                batch, stopping = self._collect(first)
                self._write(batch)
        finally:
            connections.close_all()

    def _collect(self, first: _Finished) -> tuple[list[_Finished], bool]:
        # No waiting for company: what queued up while the last batch was written goes in this
        # one, so batches grow with the load and a lone outcome is written at once.
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, batch: list[_Finished]) -> None:
        items, self._pending = [*self._pending, *batch], []
        if not items:
            return
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
            self._pending = items
        finally:
            for item in batch:
                if item.written is not None:
                    item.written.set()
