"""Keeping the history true and bounded: runs whose scheduler or worker is gone are recorded
interrupted, and old rows are pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db.models import Count, Exists, Q, QuerySet, Value
from django.utils import timezone

from scheduling import identity, signals
from scheduling.conf import settings
from scheduling.models import Alert, AlertDelivery, Execution, ExecutionQuerySet, SchedulerInstance

logger = logging.getLogger(__name__)

INTERRUPT_BATCH = 500  # runs ended, then read back and reported, per statement


class Pending(NamedTuple):
    """What a scheduler's periodic look may find to do; each False is work it can skip."""

    orphans: bool  # runs going on in other schedulers, which recover_interrupted may end
    task_runs: bool  # runs handed to task workers and not ended, which expire_task_runs may end
    alerts: bool  # open alerts (a success may close them) or deliveries due to be sent


EVERYTHING = Pending(orphans=True, task_runs=True, alerts=True)


def pending_work(instance: SchedulerInstance, leading: bool) -> Pending:
    """One statement that says which periodic looks have anything to look at.

    An idle scheduler then sends its heartbeat and this, not the five statements of the looks
    themselves: each flag is the very condition its look's writes are filtered on, widened
    (any age, any scheduler), so a False proves the look would change nothing.
    """
    no = Value(False)
    pending = AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING)
    due = pending.filter(next_attempt_at__lte=timezone.now())
    flags = (
        SchedulerInstance.objects.filter(pk=instance.pk)
        .values_list(
            Exists(Execution.objects.running().in_scheduler().elsewhere(instance)),
            Exists(Execution.objects.unfinished().in_task_workers()) if leading else no,
            Exists(Alert.objects.filter(open=True)) if leading else no,
            Exists(due) if leading else no,
        )
        .first()
    )
    # Its own row gone (deleted by hand): look at everything rather than skip by mistake.
    if flags is None:
        return EVERYTHING
    orphans, task_runs, open_alerts, deliveries_due = map(bool, flags)
    return Pending(orphans, task_runs, open_alerts or deliveries_due)


def interrupt(runs: ExecutionQuerySet, reason: str, end: Callable[[ExecutionQuerySet, str], int]) -> int:
    """End ``runs`` as interrupted for ``reason`` with ``end`` (one of the queryset's conditional
    UPDATEs, which leaves a run that ended meanwhile alone); returns how many it ended.

    Each run it ended is then reported as a failure (``job_failed``, so alerts, Sentry and a
    site's receivers hear of it), read back by id: a bulk UPDATE returns no rows on every
    database. The ids are read first, a batch at a time, so the UPDATE and the read-back name
    the same runs; a second scheduler ending them at once is told by the alert's unique key.
    """
    ended = 0
    while ids := list(runs.values_list("pk", flat=True)[:INTERRUPT_BATCH]):
        count = end(Execution.objects.filter(pk__in=ids), reason)
        ended += count
        batch = Execution.objects.filter(pk__in=ids, status=Execution.Status.INTERRUPTED)
        for execution in batch.filter(exception=reason).listed() if count else ():
            signals.notify(signals.job_failed, execution)
        # None ended (all ended meanwhile): what is left, if anything, waits for the next look.
        if count == 0 or len(ids) < INTERRUPT_BATCH:
            break
    return ended


def recover_interrupted() -> int:
    """Mark runs left "running" by schedulers that are gone as interrupted."""
    # Beating, and not proven dead: a scheduler in another container may have a pid that means
    # nothing here (see scheduling.identity); it is taken for dead only once its heartbeat stops.
    alive = [
        instance.pk for instance in SchedulerInstance.objects.alive() if not identity.scheduler_dead(instance)
    ]
    # A process of this host that still exists is alive, whatever its heartbeat says: frozen
    # (SIGSTOP, swapped out), its runs go on when it wakes, so they are not interrupted. Its
    # heartbeat is not asked here: one that woke and beat between the query above and this one
    # was in neither, and its runs were marked interrupted as they ended (a chaos run found it).
    alive += [instance.pk for instance in _local_unstopped() if identity.proven_alive(instance)]
    # Runs handed to task workers are the workers' own: expire_task_runs deals with those.
    orphans = Execution.objects.exclude(instance__in=alive).in_scheduler().running()
    count = interrupt(
        orphans,
        "Interrupted: the scheduler running it stopped without finishing it",
        lambda runs, reason: runs.mark_interrupted(reason),
    )
    if count:
        logger.warning("Marked %d run(s) left running by a stopped scheduler as interrupted", count)
    return count


def _local_unstopped() -> QuerySet[SchedulerInstance]:
    me = identity.current()
    if me is None:
        return SchedulerInstance.objects.none()
    return SchedulerInstance.objects.filter(
        stopped_at__isnull=True, boot_id=me.boot_id, pid_namespace=me.pid_namespace
    )


def running_elsewhere(instance: SchedulerInstance | None) -> dict[str, int]:
    """Runs still running in other schedulers' threads or pools, by job id.

    A scheduler taking over counts them against ``max_instances``: the one it took over from may
    be frozen, or stopping, with a run of the job still going.
    """
    rows = (
        Execution.objects.running()
        .elsewhere(instance)
        .in_scheduler()
        .values_list("job_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return dict(rows)


def expire_task_runs(timeout: float | None = None) -> int:
    """Record runs handed to task workers and not heard of for ``timeout`` seconds as interrupted.

    Enqueued runs count from when they were enqueued (no worker took them) — not from their fire
    time, which a retry, a queued fire and a run requested now keep from the fire —, running ones
    from their start (the worker that took them died, or lost its database). A worker that takes
    an expired run later leaves it alone.
    """
    timeout = settings.TASK_TIMEOUT if timeout is None else timeout
    cutoff = timezone.now() - timedelta(seconds=timeout)
    tasks = Execution.objects.in_task_workers()
    # Rows enqueued before enqueued_at existed count from their fire time, as they always did.
    unheard = Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, scheduled_at__lt=cutoff)
    waiting = interrupt(
        tasks.filter(unheard).enqueued(),
        f"Interrupted: no task worker took the run within {timeout:g} s (SCHEDULING_TASK_TIMEOUT)",
        lambda runs, reason: runs.end_unstarted(Execution.Status.INTERRUPTED, reason),
    )
    running = interrupt(
        tasks.filter(started_at__lt=cutoff).running(),
        f"Interrupted: the task worker running it sent no outcome within {timeout:g} s of its start "
        "(SCHEDULING_TASK_TIMEOUT); it died, or its run takes longer than that",
        lambda runs, reason: runs.mark_interrupted(reason),
    )
    if waiting or running:
        logger.warning(
            "Recorded %d run(s) in task workers as interrupted: %d never taken, %d never finished",
            waiting + running,
            waiting,
            running,
        )
    return waiting + running


def prune(older_than: timedelta | None = None, batch_size: int | None = None) -> int:
    """Delete finished history older than the retention, in batches; returns rows deleted."""
    cutoff = timezone.now() - (older_than or settings.HISTORY_RETENTION)
    batch_size = batch_size or settings.PRUNE_BATCH_SIZE
    old = Execution.objects.filter(scheduled_at__lt=cutoff).finished()
    deleted = 0
    while True:
        # Materialised ids: MySQL cannot DELETE ... WHERE id IN (SELECT ... LIMIT n).
        ids = list(old.order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        deleted += Execution.objects.filter(pk__in=ids).delete()[0]
    SchedulerInstance.objects.filter(stopped_at__lt=cutoff).delete()
    alerts = _prune_alerts(cutoff, batch_size)
    if deleted or alerts:
        logger.info(
            "Pruned %d execution(s) and %d alert(s) older than %s", deleted, alerts, cutoff.isoformat()
        )
    return deleted


def _prune_alerts(cutoff: datetime, batch_size: int) -> int:
    """Alerts (and their deliveries) as old as the history pruned; an open one stays until its
    job recovers, so that the recovery is still announced."""
    old = Alert.objects.filter(raised_at__lt=cutoff, open=False)
    deleted = 0
    while ids := list(old.order_by().values_list("pk", flat=True)[:batch_size]):
        Alert.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
    return deleted
