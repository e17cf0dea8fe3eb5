"""What a run's observers are told, and the shape every observer has.

An observer watches runs from the process that runs the job's code: it starts when the call
starts and is told the outcome when it ends. What it needs beyond the run's row — the job's
schedule, misfire grace and timeout, the trace context of the dispatch that handed the run over —
is computed where the job is in memory (the scheduler for threads and the process pool, the task
worker from the store row it reads anyway) and travels with the run as :class:`RunFacts`: no
observer reads the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduling.schedules import crontab_of

if TYPE_CHECKING:
    from scheduling.history.rows import Outcome
    from scheduling.models import Execution

# Units of an interval schedule as monitors take them, largest first: Sentry has no seconds.
INTERVAL_UNITS = (("week", 7 * 24 * 3600), ("day", 24 * 3600), ("hour", 3600), ("minute", 60))


@dataclass(frozen=True)
class Schedule:
    """A job's schedule as cron monitors know it: a crontab line, or every ``value`` ``unit``s."""

    kind: str  # "crontab" or "interval"
    value: str | int
    unit: str | None = None  # for intervals: minute, hour, day, week


@dataclass(frozen=True)
class RunFacts:
    """What observers learn about a run beyond its row. Plain data: it is pickled into a child
    of the process pool with the call."""

    schedule: Schedule | None = None  # None: the job has no crontab or whole-minute interval form
    timezone: str | None = None
    late_allowance: float | None = None  # seconds a fire may start late: misfire grace + jitter
    timeout: int | None = None  # seconds, from the run policy
    traceparent: str | None = None  # W3C trace context of the dispatch that handed the run over


def schedule_of(trigger: Any) -> Schedule | None:
    """The trigger as a monitor schedule; None for one-off jobs and schedules monitors cannot
    express (cron fields with seconds, years or weeks; intervals not a whole number of minutes)."""
    if isinstance(trigger, CronTrigger):
        line = crontab_of(trigger)
        return Schedule("crontab", line) if line else None
    if isinstance(trigger, IntervalTrigger):
        seconds = trigger.interval.total_seconds()
        for unit, size in INTERVAL_UNITS:
            if seconds >= size and seconds % size == 0:
                return Schedule("interval", int(seconds // size), unit)
    return None


def facts_of(
    trigger: Any, misfire_grace_time: int | None, timeout: int | None, traceparent: str | None
) -> RunFacts:
    """The facts of a run of the job with ``trigger``: a trigger of its own kind is left out."""
    zone = getattr(trigger, "timezone", None)
    jitter = getattr(trigger, "jitter", None) or 0
    return RunFacts(
        schedule=schedule_of(trigger),
        timezone=None if zone is None else str(zone),
        late_allowance=None if misfire_grace_time is None else misfire_grace_time + jitter,
        timeout=timeout,
        traceparent=traceparent,
    )


# Told the outcome of the run once it ended.
Ending = Callable[["Outcome"], None]


class Observer(Protocol):
    name: str

    def enabled(self) -> bool:
        """True when its package is importable and configured in this process."""

    def start(self, job_id: str, execution: Execution | None, facts: RunFacts | None) -> Ending:
        """The run starts now; returns what to call with its outcome."""
