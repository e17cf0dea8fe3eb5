"""Runs claimed ahead of their time, held until it (fire-ahead; see SCHEDULING_FIRE_AHEAD).

The dispatcher may claim a fire a little before it falls due: its row is recorded "running",
fenced, with no start (``started_at`` empty: claimed, not started), and the run waits here, not
on a pool thread, so the threads stay free for the runs due before it. At its scheduled time
it goes to the pool; the runs of one instant go in the order they were claimed (by fire time,
then job id: the order of lateness). Only the start of the run is left for the instant.

A held run starts only while ``may_start()`` says so (the scheduler still holds its lease, by
its own clock). One that may not start — the lease lost or run out, the scheduler stepping down,
or stopping with the run's time beyond its shutdown timeout (runs due within it are started at
their time, as the lease is still held) — never starts: it is dropped, its slot given back, and
its row left "running" without a start for whoever records it interrupted (the runner on stop
or step-down, or, after a crash, the orphaned-runs check of the next scheduler, as for any
unfinished row).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connections

from scheduling.models import Execution

logger = logging.getLogger(__name__)


@dataclass(order=True)
class Held:
    at: float  # the fire's time, in seconds since the epoch
    order: int  # claim order among runs held for the same moment
    executions: list[Execution] = field(compare=False)
    start: Callable[[], int] = field(compare=False)  # hands the run to the pool; returns runs not started
    drop: Callable[[], None] = field(compare=False)  # gives back what was reserved for it


class Holding:
    """A timer thread for runs recorded ahead: each goes to the pool at its scheduled time."""

    def __init__(self, on_refused: Callable[[list[Execution]], object]) -> None:
        self.may_start: Callable[[], bool] = lambda: True
        self._on_refused = on_refused  # runs that may not start when their time came
        self._held: list[Held] = []
        self._order = 0
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(
        self,
        at: datetime,
        executions: list[Execution],
        start: Callable[[], int],
        drop: Callable[[], None],
    ) -> bool:
        """Start ``start`` at ``at`` (at once if past); False once stopped (nothing is held)."""
        with self._changed:
            if self._closed:
                return False
            self._order += 1
            heapq.heappush(self._held, Held(at.timestamp(), self._order, executions, start, drop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scheduling-held", daemon=True)
                self._thread.start()
            self._changed.notify()
        return True

    @property
    def count(self) -> int:
        """Runs held now, claimed and not started."""
        with self._changed:
            return len(self._held)

    def ids(self) -> set[int]:
        """The ids of the runs held now."""
        with self._changed:
            return {execution.pk for held in self._held for execution in held.executions}

    def cancel(self, ids: Collection[int]) -> list[Execution]:
        """Start none of the runs held now among ``ids`` (someone asked to cancel them): each is
        dropped, its slot given back; returns their rows. One released meanwhile has started."""
        with self._changed:
            cancelled = [held for held in self._held if all(e.pk in ids for e in held.executions)]
            if not cancelled:
                return []
            gone = {id(held) for held in cancelled}
            self._held = [held for held in self._held if id(held) not in gone]
            heapq.heapify(self._held)
        for held in cancelled:
            held.drop()
        return [execution for held in cancelled for execution in held.executions]

    def drop_all(self) -> list[Execution]:
        """Give up every run held now, none of them started; returns their rows."""
        with self._changed:
            dropped, self._held = self._held, []
        for held in dropped:
            held.drop()
        return [execution for held in dropped for execution in held.executions]

    def stop(self, until: float | None = None) -> list[Execution]:
        """Hold no more runs; start those held for a time up to ``until`` (seconds since the
        epoch; None: none) at their time, and none of the others; returns the rows of those not
        started, left running. Returns once the ones it starts went to the pool."""
        with self._changed:
            self._closed = True
            later = [held for held in self._held if until is None or held.at > until]
            self._held = [held for held in self._held if until is not None and held.at <= until]
            heapq.heapify(self._held)
            self._changed.notify()
            thread = self._thread
        for held in later:
            held.drop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=None if until is None else max(until - time.time(), 0) + 5)
        return [execution for held in later for execution in held.executions]

    def _loop(self) -> None:
        try:
            while True:
                due = self._wait_for_due()
                if due is None:
                    return
                self._release(due)
        finally:
            connections.close_all()

    def _wait_for_due(self) -> list[Held] | None:
        with self._changed:
            # Once stopped, only the runs stop() kept are waited for.
            while self._held or not self._closed:
                wait = self._held[0].at - time.time() if self._held else None
                if wait is not None and wait <= 0:
                    due = []
                    now = time.time()
                    while self._held and self._held[0].at <= now:
                        due.append(heapq.heappop(self._held))
                    return due
                self._changed.wait(wait)
            return None

    def _release(self, due: list[Held]) -> None:
        # Read once for the instant: the lease by the local clock costs no round trip.
        if not self.may_start():
            for held in due:
                held.drop()
            refused = [execution for held in due for execution in held.executions]
            logger.warning(
                "%d run(s) claimed ahead were not started at their time: the scheduler no longer "
                "holds the lease",
                len(refused),
            )
            try:
                self._on_refused(refused)
            # Their rows stay running, to be recorded interrupted on stop or by the next scheduler.
            except Exception:
                logger.exception("Could not record %d run(s) not started as interrupted", len(refused))
            return
        for held in due:
            try:
                if held.start():
                    logger.info("%d run(s) due now were not started: the pool stopped", len(held.executions))
            # One run's hand-over failing must not stop the others of the instant, or the timer.
            except Exception:
                logger.exception("Could not start the run(s) held for %s", held.executions[0].scheduled_at)
