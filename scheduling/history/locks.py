"""Locks across jobs (a job's ``lock=``): jobs naming the same lock never run at the same time.

A lock is a ``RunLock`` row, unique by name (its digest), naming the run that took it by the history's key
(job, scheduled time, attempt). It is held while that run is handed over (enqueued, running,
overrunning) and free as soon as the run's row says it ended, however it ended — so nothing has
to remember to release it, and a run recorded interrupted after its scheduler or worker died
frees its lock with that very write.

Only the leading scheduler takes locks, in its loop, for the run it is about to record: the
lock first, then the run's row. Both writes are fenced by the lease, and the unique name makes
the database refuse a second holder even to a writer that slipped past the fence. A lock whose
run was never recorded (its taker stopped in between) names no run that is going: it is free.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.utils import timezone

from scheduling.fencing import Fence, FenceLost
from scheduling.models import HANDED_OVER, Execution, RunLock, lock_key
from scheduling.sql import insert_rows


class LockTaken(Exception):
    """A lock this scheduler found free was taken by another writer before it could take it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the job, and its run going on (None: a run this pass is recording)."""

    name: str
    job_id: str
    run_id: int | None = None

    @property
    def skip_message(self) -> str:
        run = f" (run {self.run_id})" if self.run_id is not None else ""
        return f'Skipped: the lock "{self.name}" was held by job {self.job_id}{run}'


def _holding_run() -> QuerySet[Execution]:
    """The run a ``RunLock`` row (the outer query) names, while it is going."""
    return Execution.objects.filter(
        job_id=OuterRef("job_id"),
        scheduled_at=OuterRef("scheduled_at"),
        attempt=OuterRef("attempt"),
        status__in=HANDED_OVER,
    )


def holders(names: Collection[str]) -> dict[str, Holder]:
    """The locks among ``names`` held now, by name, in one query."""
    if not names:
        return {}
    by_key = {lock_key(name): name for name in names}
    rows = (
        RunLock.objects.filter(key__in=list(by_key))
        .annotate(run_id=Subquery(_holding_run().values("pk")[:1]))
        .filter(run_id__isnull=False)
        .values_list("key", "job_id", "run_id")
    )
    return {by_key[key]: Holder(by_key[key], job_id, run_id) for key, job_id, run_id in rows}


def take(wanted: Sequence[tuple[str, Execution]], fence: Fence | None) -> list[str]:
    """Take each named lock for its run, whose row is about to be recorded; returns the names
    another writer took meanwhile (their runs must not start).

    Two statements: the locks' rows whose runs ended are deleted, then the new rows inserted
    (a name taken meanwhile is skipped by the unique constraint), both fenced.

    :raises FenceLost: nothing was taken because the lease is no longer this process's.
    """
    if not wanted:
        return []
    names = [name for name, _ in wanted]
    if len(set(names)) != len(names):
        raise ValueError(f"A lock is wanted twice in one take: {sorted(names)}")
    keys = [lock_key(name) for name in names]
    ended = RunLock.objects.filter(key__in=keys).exclude(Exists(_holding_run()))
    if fence is not None:
        ended = ended.filter(fence.exists())
    ended.delete()
    now = timezone.now()
    rows = [
        RunLock(
            key=key,
            name=name,
            job_id=run.job_id,
            scheduled_at=run.scheduled_at,
            attempt=run.attempt,
            taken_at=now,
        )
        for key, (name, run) in zip(keys, wanted, strict=True)
    ]
    inserted, _ = insert_rows(rows, fence.sql() if fence is not None else ("1 = 1", []))
    if inserted == len(rows):
        return []
    if fence is not None and not fence.holds():
        raise FenceLost(fence, f"take the lock(s) {', '.join(names)}")
    # Some names were taken meanwhile: the rows on disk say by whom.
    on_disk = {
        key: (job_id, scheduled_at, attempt)
        for key, job_id, scheduled_at, attempt in RunLock.objects.filter(key__in=keys).values_list(
            "key", "job_id", "scheduled_at", "attempt"
        )
    }
    return [
        name
        for key, (name, run) in zip(keys, wanted, strict=True)
        if on_disk.get(key) != (run.job_id, run.scheduled_at, run.attempt)
    ]
