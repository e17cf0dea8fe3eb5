"""Triggers that misbehave, to show one job's failure stays that job's (pickled into the store)."""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger


class Exploding(BaseTrigger):
    """Raises as soon as the scheduler asks for the fire after its first."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        raise RuntimeError("this trigger fails on purpose")


class Backwards(BaseTrigger):
    """Each fire a second *before* the previous one: a loop that trusts it never ends."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        return (previous_fire_time or now) - timedelta(seconds=1)


class Dense(BaseTrigger):
    """A fire every microsecond: from an hour back, billions of fires to catch up on."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        return (previous_fire_time or now) + timedelta(microseconds=1)
