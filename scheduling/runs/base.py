"""Where runs happen, as the dispatcher sees it: one interface for every placement.

In the spirit of APScheduler's ``BaseExecutor``, but for runs already recorded: the dispatcher
writes a fire's row first (fenced, see scheduling.history.recorder), then hands the run to the
target of the job's placement. Threads, the process pool and task workers each implement
:class:`RunTarget`; the dispatcher holds one per placement and never asks which one it has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from apscheduler.job import Job

from scheduling.history.rows import Origin
from scheduling.models import Execution
from scheduling.policy import RunPolicy


class RunTarget(Protocol):
    """Runs of jobs placed in one place: reserved, recorded by the dispatcher, then submitted."""

    #: Whether a run recorded ahead of its time (without a start) may be submitted at once: the
    #: target holds it until its scheduled time (fire-ahead). False: fires are claimed once due.
    holds_runs: bool

    def count_busy(self, jobs: list[Job]) -> None:
        """Count the runs of ``jobs`` going on now, once for a pass, before :meth:`reserve`."""

    def reserve(self, job: Job, fires: int, waiting: int = 0) -> int:
        """Take slots for up to ``fires`` due runs of ``job``; returns how many may start.

        ``waiting`` runs of the job hold slots without going on: its pending retries."""

    def release(self, job: Job) -> None:
        """Give back what :meth:`reserve` took, for runs that will not start."""

    def row(self, job: Job, scheduled_at: datetime, origin: Origin) -> Execution:
        """The history row a run here starts with: running, or enqueued for a worker."""

    def submit(self, job: Job, executions: list[Execution], origin: Origin, policy: RunPolicy) -> int:
        """Start reserved runs whose rows are recorded, bounded by the job's run ``policy``
        (its timeout); returns how many could not start."""


def slots_left(job: Job, busy: int) -> int:
    """The max_instances rule: how many more runs of ``job`` may start while ``busy`` are going."""
    return max(job.max_instances - busy, 0)
