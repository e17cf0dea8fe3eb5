"""Intervals in elapsed time, with jitter that stays inside its slot.

APScheduler's IntervalTrigger counts from the previous *jittered* fire, so jitter accumulates
into drift and, when it is longer than the interval, fires overlap their successors. Here, with
jitter, slots stay on the grid ``start_date + n * interval`` (elapsed seconds, whatever the wall
clock does) and each fire lies in [slot, slot + jitter], capped to end before the next slot.
"""

from __future__ import annotations

import datetime as dt
import random

from apscheduler.triggers.interval import IntervalTrigger

UTC = dt.UTC
MICROSECOND = 1e-6


class ElapsedIntervalTrigger(IntervalTrigger):
    """An IntervalTrigger (same fields, same pickled state) whose jitter cannot go backwards."""

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        if previous_fire_time is None:
            slot = self.next_slot(now, inclusive=True)
        elif not self.jitter:
            # Without jitter the previous fire is a slot: count on from it, as APScheduler does,
            # so a fire time moved by hand (or by an older version) keeps its new phase.
            slot = previous_fire_time.astimezone(UTC) + self.interval
            if self.end_date is not None and slot > self.end_date:
                return None
        else:
            slot = self.next_slot(previous_fire_time)
        if slot is None:
            return None
        window = self.jitter_window()
        if window:
            slot += dt.timedelta(seconds=random.uniform(0, window))  # noqa: S311 -- spreading load, not a secret
            if self.end_date is not None:
                slot = min(slot, self.end_date.astimezone(UTC))
        # In UTC, as CrontabTrigger's: same-zone datetimes compare by wall clock, ignoring fold.
        return slot

    def next_slot(self, after: dt.datetime, inclusive: bool = False) -> dt.datetime | None:
        """The first grid point after ``after`` (at or after it when ``inclusive``), in UTC."""
        # timedelta arithmetic is exact to the microsecond; float timestamps could round a slot
        # onto the previous fire and never move on.
        start = self.start_date.astimezone(UTC)
        elapsed = after.astimezone(UTC) - start
        count = -(-elapsed // self.interval) if inclusive else elapsed // self.interval + 1
        slot = start + self.interval * max(count, 0)
        if self.end_date is not None and slot > self.end_date:
            return None
        return slot

    def jitter_window(self) -> float:
        """``jitter`` seconds, capped so a fire ends before the next slot."""
        if not self.jitter:
            return 0.0
        return min(float(self.jitter), self.interval_length - MICROSECOND)
