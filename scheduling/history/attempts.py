"""Retries of failed runs: whether a failed attempt is tried again, and when.

A failed run whose fire has attempts left is written with its outcome and ``retry_at`` (the
next attempt's time) in the same UPDATE (``history.writer.finish_all``, which the scheduler's
outcome writer and task workers both call), so a pending retry is a row in the database: it
survives a crash, a restart and a change of leader. The leading scheduler takes it when due
(``Dispatcher.run_retries``): the next attempt's row goes in fenced, unique per (job, scheduled
time, attempt), and ``retry_at`` is cleared, so each attempt runs once. See docs/design.md.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from datetime import datetime, timedelta

from scheduling.history.rows import Outcome
from scheduling.models import Execution, ScheduledJob
from scheduling.policy import RunPolicy

# Matched when retry_on is empty: what a job's code raises, not SystemExit or KeyboardInterrupt.
ANY_ERROR = "builtins.Exception"


def backoff(policy: RunPolicy, attempt: int, draw: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1 = the first run) before the next.

    Exponential, ``retry_backoff * 2**(attempt - 1)``, capped by ``retry_backoff_max``, then
    jittered into its upper half ("equal jitter"): retries of many runs that failed together
    (a database restart) spread out, and none comes sooner than half its step. ``draw`` is a
    number in [0, 1), random when not given.
    """
    step = min(policy.retry_backoff * 2.0 ** min(attempt - 1, 64), policy.retry_backoff_max)
    return step / 2 + step / 2 * (random.random() if draw is None else draw)  # noqa: S311 - not crypto


def retries(outcome: Outcome, policy: RunPolicy) -> bool:
    """Whether a failed outcome is one ``policy`` retries: its exception is of a class in
    ``retry_on`` (any Exception when empty); a failure without an exception (a pool child
    that died) always is."""
    if outcome.status != Execution.Status.FAILED:
        return False
    if not outcome.error_types:
        return True
    wanted = policy.retry_on or (ANY_ERROR,)
    return any(name in outcome.error_types for name in wanted)


def retry_times(finished: Collection[tuple[Execution, Outcome]]) -> dict[int, datetime]:
    """When the next attempt of each failed run that has attempts left is due, by run id.

    The policies are read (one query) only when some run failed with attempts left: the number
    of attempts was fixed when the fire was first recorded, backoff and retry_on are the job's
    as it fails.
    """
    failed = [
        (execution, outcome)
        for execution, outcome in finished
        if outcome.status == Execution.Status.FAILED and execution.attempt < execution.attempts
    ]
    if not failed:
        return {}
    stored = dict(
        ScheduledJob.objects.filter(id__in={execution.job_id for execution, _ in failed}).values_list(
            "id", "run_policy"
        )
    )
    times = {}
    for execution, outcome in failed:
        policy = RunPolicy.from_stored(stored.get(execution.job_id))
        if retries(outcome, policy):
            delay = backoff(policy, execution.attempt)
            times[execution.pk] = outcome.finished_at + timedelta(seconds=delay)
    return times
