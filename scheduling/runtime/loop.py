"""The scheduling loop: APScheduler's BackgroundScheduler, with a loop that polls the store and
hands due jobs to the dispatcher.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_STOPPED
from django.db import DatabaseError, connections

from scheduling.conf import settings
from scheduling.fencing import FenceLost
from scheduling.runtime.dispatch import Dispatcher

MAX_SLEEP = 3600.0  # seconds; a poll or a notification catches anything earlier
DISPATCH_BATCH = 1000  # jobs started per pass of the loop; more due ones go in the next pass
# Fire-ahead: the window is widened to the time the last claim took and half the setting more
# (so a larger batch is claimed earlier), up to this many times SCHEDULING_FIRE_AHEAD: wider, a
# job firing every second would find its next fire in the window while its run still goes (such
# a fire is left to its time). Measured: 1,000 jobs a second took 0.25-0.9 s to claim on 2 busy cores.
MAX_FIRE_AHEAD = 4.0
# More jobs due together than one pass claims: the claim starts earlier by the time its further
# passes take (a full pass's, as last measured), so that all are claimed by their time, up to
# this many times SCHEDULING_FIRE_AHEAD (10 s by default). Measured on PostgreSQL, 10,000 jobs due
# at once: ten passes of 0.2 s, of which a window of 1 s covered five; the others were claimed
# while the first 5,000 runs started, and came late by up to 2 s. Every-second jobs stay within
# MAX_FIRE_AHEAD unless more of them fall due each second than about four passes claim.
MAX_CLAIM_AHEAD = 40.0


def drop_broken_connections() -> None:
    """Close this thread's connections that failed, so the next query reconnects."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
            connection.close()


logger = logging.getLogger(__name__)


class Scheduler(BackgroundScheduler):
    """A BackgroundScheduler whose loop also notices changes made by other processes.

    Stock APScheduler sleeps until its own next wake-up, so a job added, resumed or rescheduled
    elsewhere waits until then (or is found late and dropped). Every ``poll_interval`` this loop
    asks the store for its earliest next run time (one indexed query) and wakes up early if it
    moved earlier — unless ``polls()`` says changes are pushed instead (see
    scheduling.runtime.notifications), whose notifications call ``wakeup()``. ``on_tick`` runs at
    least every ``housekeeping_interval`` seconds whatever the poll interval (the lease needs
    renewing). Database errors anywhere in the loop are logged and retried with backoff; in stock
    APScheduler an error in ``update_job`` ends the loop for good.
    """

    def __init__(
        self,
        *,
        poll_interval: float,
        on_tick: Callable[[], None] | None = None,
        may_dispatch: Callable[[], bool] | None = None,
        dispatcher: Dispatcher | None = None,
        on_fence_lost: Callable[[FenceLost], None] | None = None,
        polls: Callable[[], bool] | None = None,
        housekeeping_interval: float | None = None,
        fire_ahead: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.poll_interval = poll_interval
        self.fire_ahead = fire_ahead  # seconds; 0: fires are claimed once due
        # Seconds the last claim took, its passes from wake-up to the last; until one is measured,
        # the window is its widest (a first claim loads every job: the slowest of all).
        self._claim_took: float | None = None
        self._claim_more = False  # the last pass was full: the next one belongs to the same claim
        self._pass_took: float | None = None  # seconds the last full pass took
        # A claim planned wider than the window (see _lead_before): from when, up to when.
        self._wide_claim: tuple[datetime, datetime] | None = None
        self._horizon: datetime | None = None  # the last pass's: up to when it claimed fires
        self.polls = polls or (lambda: True)
        self.tick_interval = min(poll_interval, housekeeping_interval or poll_interval)
        self._next_poll = 0.0  # monotonic
        self.on_tick = on_tick
        self.may_dispatch = may_dispatch or (lambda: True)
        self.dispatcher = dispatcher
        self.on_fence_lost = on_fence_lost

    def _main_loop(self) -> None:
        try:
            self._loop()
        finally:
            connections.close_all()

    def _loop(self) -> None:
        next_wakeup: datetime | None = None  # None: look for due jobs now
        failures = 0
        while self.state != STATE_STOPPED:
            if next_wakeup is not None:
                # While the database is failing, wait out the backoff instead of polling it.
                cap = MAX_SLEEP if failures else self.tick_interval
                wait = min((next_wakeup - self._now()).total_seconds(), cap)
                # Cleared only when it woke the loop: a wake-up that comes just after the wait
                # timed out must not be lost, when no poll would catch what it announced.
                if self._event.wait(max(wait, 0)):
                    self._event.clear()
                    next_wakeup = None
                if self.state == STATE_STOPPED:
                    break
            try:
                next_wakeup = self._tick(next_wakeup)
            except FenceLost as exc:
                # Not a failure to retry: another scheduler leads now, and this one stands by.
                if self.on_fence_lost is not None:
                    self.on_fence_lost(exc)
                next_wakeup = self._now() + timedelta(seconds=self.poll_interval)
                continue
            except DatabaseError as exc:
                failures += 1
                delay = min(0.5 * 2**failures, settings.DATABASE_RETRY_MAX)
                (logger.warning if failures == 1 else logger.debug)(
                    "Database error in the scheduler loop (%s); retrying in %.1f s", exc, delay
                )
                drop_broken_connections()
                next_wakeup = self._now() + timedelta(seconds=delay)
                continue
            # The loop must outlive any surprise (e.g. a job deleted by another process between
            # reading and updating it); the next pass starts from fresh database state.
            except Exception:
                failures += 1
                logger.exception("Unexpected error in the scheduler loop; retrying in 1 s")
                next_wakeup = self._now() + timedelta(seconds=1)
                continue
            if failures:
                logger.info("The scheduler loop recovered after %d failed attempt(s)", failures)
                failures = 0

    def _tick(self, next_wakeup: datetime | None) -> datetime:
        drop_broken_connections()
        # Due runs go first, checked against the lease by this process's clock alone; the
        # housekeeping's statements (lease renewal, run requests, heartbeat) follow them, so
        # they do not delay runs due on the second.
        # Without a dispatcher (a loop that only keeps time), nothing is ever due.
        dispatcher = self.dispatcher
        if (
            dispatcher is not None
            and self.state != STATE_PAUSED
            and self.may_dispatch()
            and self._due(dispatcher, next_wakeup)
        ):
            next_wakeup = self._dispatch_due(dispatcher)
        if self.on_tick is not None:
            self.on_tick()
        return next_wakeup or self._now() + timedelta(seconds=self.poll_interval)

    def _dispatch_due(self, dispatcher: Dispatcher) -> datetime:
        """Start what is due, in batches (see scheduling.runtime.dispatch); returns when to look again.

        That is the store's earliest next run time itself (less the fire-ahead window), not "now
        + the seconds until it": a moment computed from a later clock reading falls just after
        it, and then every poll would find that run "earlier" than the wake-up and run the
        due-jobs query for nothing.

        With fire-ahead, the fires due within the window are claimed too (recorded and moved
        on, fenced, as due ones are) and their runs held until their time; the loop wakes up a
        window before the next fire. A fire of the window left unclaimed (it would not simply
        start) is looked at again at its time.
        """
        started = time.monotonic()
        latest = self._now() + timedelta(seconds=MAX_SLEEP)
        now = self._now()
        lead = self.lead()
        horizon = now + lead if lead else None
        if horizon is not None and self._claim_more and self._horizon is not None:
            horizon = max(horizon, self._horizon)  # a claim in several passes keeps its window
        if horizon is not None and self._wide_claim is not None and now >= self._wide_claim[0]:
            horizon = max(horizon, self._wide_claim[1])  # a claim planned wider, now due
        self._horizon = horizon
        store = dispatcher.store
        due, later = store.get_due_jobs_and_next_run_time(horizon or now, DISPATCH_BATCH)
        moved = dispatcher.dispatch(due, now, horizon) if due else None
        left = dispatcher.left if due and horizon else None
        retry = store.next_retry  # read by the due query: the earliest pending retry
        if retry is not None and retry <= now:
            dispatcher.run_retries(now)
            # Those left waiting for a slot, and the retries after them, are looked for at the
            # next poll (get_next_run_time sees them too).
            retry = now + timedelta(seconds=self.poll_interval)
        more = bool(due) and later is not None and later <= (horizon or now)
        if due:
            self._measure_claim(started, more=more)
        if more:
            # More are due than one pass takes (the store gave the horizon as the next run time):
            # the next pass follows at once, with this one's horizon at least. From a lead
            # re-measured after one pass, the rest of a large claim would wait, then crowd the
            # instant its first runs start at.
            return now
        self._wide_claim = None
        if later is not None:
            wider = self._lead_before(store, lead)
            if wider > lead:
                # From the wake-up planned for it on (not at one a notification brings earlier),
                # the claim reaches as far as what was counted.
                self._wide_claim = (later - wider, later + lead)
            later -= wider
        if moved is not None:
            moved -= lead
        wake = [moment for moment in (later, moved) if moment is not None]
        return min(moment for moment in (*wake, left, retry, latest) if moment is not None)

    def lead(self) -> timedelta:
        """The fire-ahead window now: the setting, widened to the time the last claim took."""
        if not self.fire_ahead:
            return timedelta(0)
        if self._claim_took is None:
            return timedelta(seconds=MAX_FIRE_AHEAD * self.fire_ahead)
        widened = max(self.fire_ahead, self._claim_took + self.fire_ahead / 2)
        return timedelta(seconds=min(widened, MAX_FIRE_AHEAD * self.fire_ahead))

    def _lead_before(self, store: Any, lead: timedelta) -> timedelta:
        """The window before the store's next run time after the due jobs: ``lead``, wider by the
        time the further passes take when more jobs fall due together at that moment than one
        pass claims (see MAX_CLAIM_AHEAD)."""
        if not lead:
            return lead
        passes = math.ceil(store.next_crowd / DISPATCH_BATCH)  # counted by the due query
        if passes <= 1:
            return lead
        widest = MAX_CLAIM_AHEAD * self.fire_ahead
        pass_took = self._pass_took or self.fire_ahead  # until a full pass is measured: the setting
        return min(lead + timedelta(seconds=(passes - 1) * pass_took), timedelta(seconds=widest))

    def _measure_claim(self, started: float, more: bool) -> None:
        """Count the pass into the time its claim took; passes that follow a full one (more were
        due) add up, so a larger batch is claimed earlier the next time."""
        took = time.monotonic() - started
        if more:
            self._pass_took = took
        earlier = (self._claim_took or 0.0) if self._claim_more else 0.0
        self._claim_took = earlier + took
        self._claim_more = more

    def _due(self, dispatcher: Dispatcher, next_wakeup: datetime | None) -> bool:
        if next_wakeup is None or self._now() >= next_wakeup:
            return True
        if not self._poll_due():
            return False
        earliest = dispatcher.store.get_next_run_time()
        return earliest is not None and earliest - self.lead() < next_wakeup

    def _poll_due(self) -> bool:
        if not self.polls():
            return False
        now = time.monotonic()
        if now < self._next_poll:
            return False
        # Ticks come every tick_interval: a poll at the first tick of each poll_interval (at every
        # tick when the two are equal, as by default).
        self._next_poll = now + self.poll_interval - self.tick_interval
        return True

    def _now(self) -> datetime:
        return datetime.now(self.timezone)
