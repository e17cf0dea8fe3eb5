"""Outcomes of runs, written to the history in batches by one thread.

A run is on disk as "running" before it starts; its outcome only has to reach the database soon
after it ends. Writing the outcomes that queued up meanwhile in one UPDATE turns a statement per
run into one per batch when many runs end together, and keeps the job threads free of history
writes. A crash loses only the outcomes still queued (as a crash between a run's end and its
write always could): those runs stay "running" and are recorded as interrupted, never lost.
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

MAX_BATCH = 500  # outcomes per UPDATE, which carries a CASE branch per run and field


@dataclass(frozen=True)
class _Finished:
    execution: Execution
    outcome: Outcome
    written: threading.Event | None


class Finisher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="scheduling-history", daemon=True)
        self._thread.start()

    def finish(self, execution: Execution, outcome: Outcome, wait: bool = False) -> None:
        """Queue a run's outcome; with ``wait``, return once it is on disk."""
        written = threading.Event() if wait else None
        self._queue.put(_Finished(execution, outcome, written))
        if written is not None:
            written.wait()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
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

    @staticmethod
    def _write(batch: list[_Finished]) -> None:
        try:
            finish_all([(item.execution, item.outcome) for item in batch])
        # finish_all retries while the database is away; past that, the runs stay "running"
        # and are recorded as interrupted, and this thread must live on for the next batch.
        except Exception:
            logger.exception("Could not record the outcome of %d run(s)", len(batch))
        finally:
            for item in batch:
                if item.written is not None:
                    item.written.set()
