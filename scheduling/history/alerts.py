"""Alerts: raised once per job and cause, queued for delivery, recovery announced once.

Causes, by the job's alert policy (``scheduling.policy.AlertPolicy``, or SCHEDULING_ALERTS):

- a run whose last attempt failed or timed out (after ``after_failures`` in a row), a missed fire,
  a fire skipped because a run was still going or its lock was held — raised by receivers of the
  scheduling signals, in the process that records it;
- a run still going after ``longer_than`` seconds or ``longer_than_usual`` times the median of
  its job's last 20 successes (at least 5 s), a job without a success for
  ``no_success_within`` seconds, and the first success after a failure or a silence (*recovered*)
  — found by the leading scheduler's periodic look (:func:`look`).

A run that went well costs no statement here: no receiver listens to successes, and recoveries
are found by the periodic look, which reads only the open alerts. Each alert has a unique
``key`` (the run, or the silence, it is about), so a second process seeing the same thing raises
nothing; a second alert of one job and rule within SCHEDULING_ALERT_INTERVAL is recorded with
its deliveries *suppressed*. Deliveries are sent by scheduling.runtime.alert_watch, never by
the process that raises them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from django.db import DatabaseError, IntegrityError, router, transaction
from django.db.models import Exists, F, Max, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import signals, validation
from scheduling.conf import settings
from scheduling.models import Alert, AlertDelivery, Execution, ScheduledJob
from scheduling.policy import AlertPolicy, RunPolicy

logger = logging.getLogger(__name__)

Rule = Alert.Rule
# A run recorded interrupted (its scheduler or task worker died, or a stop outlasted it) did not
# do its work either: it alerts, and counts in a streak, as a failure.
FAILED = (Execution.Status.FAILED, Execution.Status.TIMED_OUT, Execution.Status.INTERRUPTED)
ENDED = (Execution.Status.SUCCEEDED, *FAILED)  # the runs a streak of failures is counted over
USUAL_RUNS = 20  # the successes a job's usual duration is the median of
SHORTEST_LONG_RUN = 5.0  # seconds: "k times usual" never calls a run this short long


def alert_policy(policy: RunPolicy) -> AlertPolicy | None:
    """The alerts a job with run ``policy`` raises: its own, else the site's; None: none."""
    chosen = policy.alert
    if chosen is None and settings.ALERTS:
        chosen = AlertPolicy.from_stored(validation.check_alert(settings.ALERTS) or {})
    return chosen if chosen is not None and chosen.to else None


def policies(job_ids: Collection[str]) -> dict[str, AlertPolicy]:
    """The alert policies of ``job_ids`` that raise any alert, in one query."""
    stored = dict(ScheduledJob.objects.filter(id__in=list(job_ids)).values_list("id", "run_policy"))
    found = {job_id: alert_policy(RunPolicy.from_stored(stored.get(job_id))) for job_id in job_ids}
    return {job_id: policy for job_id, policy in found.items() if policy is not None}


def raise_alert(
    job_id: str,
    rule: str,
    key: str,
    message: str,
    policy: AlertPolicy,
    execution_id: int | None = None,
    opens: bool = False,
    at: datetime | None = None,
    limited: bool = True,
) -> Alert | None:
    """Record an alert and queue its deliveries; None if one with ``key`` was raised already.

    ``at`` is when what it is about happened (default: now): a recovery closes the alerts raised
    before its success. With ``limited`` (alerts that may come once a fire), it is suppressed —
    recorded, not sent — when an alert of the same job and rule was sent or queued within
    SCHEDULING_ALERT_INTERVAL; an alert that comes once an incident (a streak, a silence, a
    recovery) always goes out.
    """
    now = at or timezone.now()
    using = router.db_for_write(Alert)
    try:
        with transaction.atomic(using=using):
            alert = Alert.objects.create(
                key=digest(key),
                job_id=job_id,
                rule=rule,
                execution_id=execution_id,
                message=message,
                raised_at=now,
                open=opens,
            )
            recent = limited and (
                AlertDelivery.objects.filter(
                    alert__job_id=job_id,
                    alert__rule=rule,
                    alert__raised_at__gte=now - timedelta(seconds=settings.ALERT_INTERVAL),
                )
                .exclude(alert=alert)
                .exclude(status=AlertDelivery.Status.SUPPRESSED)
                .exists()
            )
            status = AlertDelivery.Status.SUPPRESSED if recent else AlertDelivery.Status.PENDING
            AlertDelivery.objects.bulk_create(
                AlertDelivery(
                    alert=alert,
                    destination=destination,
                    status=status,
                    next_attempt_at=None if recent else now,
                )
                for destination in policy.to
            )
    except IntegrityError:
        return None  # raised already, by this process or another
    logger.warning("Alert for job %s: %s%s", job_id, message, " (rate limit: not sent)" if recent else "")
    if not recent:
        delivery_due.set()
    return alert


# Set when a delivery was queued in this process, so the sender need not wait for its next look.
delivery_due = threading.Event()


@dataclass(frozen=True)
class _Seen:
    rule: str
    execution: Execution


class Receiver:
    """What the signals report, turned into alerts: at once where no scheduler runs (a task
    worker), or handed to the scheduler's alert thread, so that the thread recording a missed
    fire (the scheduler's loop) never waits on a query for it."""

    def __init__(self) -> None:
        self.queue: deque[_Seen] = deque()
        self.deferred = False  # set by the alert thread of a scheduler process
        self.wake: Callable[[], None] = lambda: None

    def failed(self, sender: str, execution: Execution, **kwargs: Any) -> None:
        # A cancel is someone's decision; a failure whose retry is pending is not the last word.
        if execution.status in FAILED and execution.retry_at is None:
            self._seen(Rule.FAILURE, execution)

    def missed(self, sender: str, execution: Execution, **kwargs: Any) -> None:
        self._seen(Rule.MISSED, execution)

    def skipped(self, sender: str, execution: Execution, **kwargs: Any) -> None:
        self._seen(Rule.SKIPPED, execution)

    def _seen(self, rule: str, execution: Execution) -> None:
        if execution.pk is None:
            return
        self.queue.append(_Seen(rule, execution))
        if self.deferred:
            self.wake()
        else:
            self.drain()

    def drain(self) -> None:
        """Raise the alerts of what was seen: one query for the policies of their jobs.

        A database error puts back what is not raised yet, for the next look; any other error is
        the one run's, logged, and the others are raised.
        """
        seen = []
        while self.queue:
            seen.append(self.queue.popleft())
        if not seen:
            return
        try:
            found = policies({item.execution.job_id for item in seen})
        except DatabaseError:
            self.queue.extendleft(reversed(seen))
            raise
        for number, item in enumerate(seen):
            policy = found.get(item.execution.job_id)
            if policy is None or item.rule not in policy.on:
                continue
            try:
                _raise_for_run(item.rule, item.execution, policy)
            except DatabaseError:
                self.queue.extendleft(reversed(seen[number:]))
                raise
            # One run's alert failing (a row that cannot be described) is that run's problem.
            except Exception:
                logger.exception("Job %s: could not raise its alert", item.execution.job_id)


receiver = Receiver()


def connect() -> None:
    signals.job_failed.connect(receiver.failed, dispatch_uid="scheduling.alerts.failed")
    signals.job_missed.connect(receiver.missed, dispatch_uid="scheduling.alerts.missed")
    signals.job_skipped.connect(receiver.skipped, dispatch_uid="scheduling.alerts.skipped")


def _raise_for_run(rule: str, execution: Execution, policy: AlertPolicy) -> None:
    if rule == Rule.FAILURE:
        _raise_for_failure(execution, policy)
        return
    job_id = execution.job_id
    what = "missed a fire" if rule == Rule.MISSED else "skipped a fire"
    when = f"{execution.scheduled_at:%Y-%m-%d %H:%M:%S %Z}"
    message = f"Job {job_id} {what} ({when}): {execution.exception}"
    raise_alert(job_id, rule, f"{rule}:{execution.pk}", message, policy, execution.pk)


def _raise_for_failure(execution: Execution, policy: AlertPolicy) -> None:
    """A failed run: alert if, as its row now says, it failed for good (not cancelled by the
    outcome's UPDATE, no retry pending), and — with ``after_failures`` — it makes the streak."""
    job_id = execution.job_id
    row = (
        Execution.objects.filter(pk=execution.pk)
        .values_list("status", "retry_at", "finished_at", "exception")
        .first()
    )
    if row is None or row[0] not in FAILED or row[1] is not None:
        return
    status, _, finished_at, exception = row
    in_a_row = policy.after_failures
    if in_a_row > 1:
        if _failures_in_a_row(job_id, execution.pk, finished_at, in_a_row + 1) != in_a_row:
            return
        how = f"failed {in_a_row} times in a row; the last time"
    else:
        how = "timed out" if status == Execution.Status.TIMED_OUT else "failed"
        if status == Execution.Status.INTERRUPTED:
            # Its text starts "Interrupted: ": "was interrupted: the scheduler running it stopped ..."
            how, exception = "was interrupted", exception.removeprefix("Interrupted: ")
    raise_alert(
        job_id,
        Rule.FAILURE,
        f"failure:{execution.pk}",
        f"Job {job_id} {how}: {exception}",
        policy,
        execution.pk,
        opens=True,
        at=finished_at,
        limited=in_a_row == 1,
    )


def _failures_in_a_row(job_id: str, pk: int, finished_at: datetime | None, most: int) -> int:
    """How many of the job's fires up to run ``pk`` failed in a row, counting each fire once: its
    last attempt (an earlier one was retried; a retry pending is not the last word)."""
    retried = Execution.objects.filter(
        job_id=OuterRef("job_id"), scheduled_at=OuterRef("scheduled_at"), attempt__gt=OuterRef("attempt")
    )
    fires = Execution.objects.filter(job_id=job_id, status__in=ENDED, retry_at__isnull=True).exclude(
        Exists(retried)
    )
    if finished_at is not None:
        # Up to this run in (finished_at, pk) order: runs ended by one UPDATE share their end.
        fires = fires.filter(
            Q(finished_at__lt=finished_at) | Q(finished_at=finished_at, pk__lte=pk) | Q(pk=pk)
        )
    last = list(fires.order_by("-finished_at", "-pk").values_list("status", flat=True)[:most])
    return next((number for number, status in enumerate(last) if status not in FAILED), len(last))


def look(now: datetime | None = None, silences: bool = True) -> None:
    """The leading scheduler's periodic look: recoveries, and (with ``silences``) runs going on
    too long and jobs without a success for too long."""
    now = now or timezone.now()
    _recoveries()
    if silences:
        _long_runs_and_silences(now)


def _recoveries() -> None:
    """A success after open alerts: one *recovered* alert, and the alerts raised before that
    success close (one raised after it stays open, for the next success to close)."""
    first_success = Execution.objects.filter(
        job_id=OuterRef("job_id"),
        status=Execution.Status.SUCCEEDED,
        finished_at__gt=OuterRef("raised_at"),
    ).order_by("finished_at", "pk")
    latest: dict[str, tuple[datetime, int]] = {}
    for job_id, success, success_at in (
        Alert.objects.filter(open=True)
        .annotate(
            success=Subquery(first_success.values("pk")[:1]),
            success_at=Subquery(first_success.values("finished_at")[:1]),
        )
        .filter(success__isnull=False)
        .values_list("job_id", "success", "success_at")
    ):
        if job_id not in latest or success_at > latest[job_id][0]:
            latest[job_id] = (success_at, success)
    if not latest:
        return
    found = policies(latest)
    for job_id, (success_at, success) in latest.items():
        with transaction.atomic(using=router.db_for_write(Alert)):
            still_open = Alert.objects.filter(job_id=job_id, open=True, raised_at__lt=success_at)
            closed = still_open.update(open=False)
            if closed and (policy := found.get(job_id)) is not None:
                message = f"Job {job_id} recovered: run {success} succeeded"
                key = f"recovered:{job_id}:{success}"
                raise_alert(
                    job_id, Rule.RECOVERED, key, message, policy, success, at=success_at, limited=False
                )


def _long_runs_and_silences(now: datetime) -> None:
    scheduled = set(DjangoJob.objects.filter(next_run_time__isnull=False).values_list("id", flat=True))
    found = policies(scheduled)
    long_runs = {
        job_id: policy
        for job_id, policy in found.items()
        if policy.longer_than is not None or policy.longer_than_usual is not None
    }
    silent = {job_id: policy for job_id, policy in found.items() if policy.no_success_within is not None}
    if long_runs:
        _long_runs(long_runs, now)
    if silent:
        _silences(silent, now)


def _long_runs(found: dict[str, AlertPolicy], now: datetime) -> None:
    """Runs going longer than their job's limit in seconds, or than k times its usual duration."""
    # The youngest run either rule may judge: a job with both is judged by k times usual too,
    # however long its limit in seconds.
    shortest = min(
        SHORTEST_LONG_RUN
        if policy.longer_than_usual is not None or policy.longer_than is None
        else policy.longer_than
        for policy in found.values()
    )
    going = list(
        Execution.objects.filter(job_id__in=list(found), started_at__lte=now - timedelta(seconds=shortest))
        .running()
        .values_list("pk", "job_id", "started_at")
    )
    relative = {job_id for _, job_id, _ in going if found[job_id].longer_than_usual is not None}
    usual = usual_durations(relative) if relative else {}
    slow = []
    for pk, job_id, started_at in going:
        if started_at is None:
            continue
        policy, elapsed = found[job_id], (now - started_at).total_seconds()
        if policy.longer_than is not None and elapsed >= policy.longer_than:
            slow.append((pk, job_id, f"still going after {policy.longer_than} s"))
        elif policy.longer_than_usual is not None and job_id in usual:
            typical, factor = usual[job_id], policy.longer_than_usual
            if elapsed >= max(factor * typical, SHORTEST_LONG_RUN):
                why = (
                    f"still going after {elapsed:.0f} s, over {factor:g} times its usual {typical:.3g} s "
                    f"(the median of its last {USUAL_RUNS} successes)"
                )
                slow.append((pk, job_id, why))
    raised = _raised({f"long_run:{pk}" for pk, _, _ in slow})
    starts = {pk: started_at for pk, _, started_at in going}
    for pk, job_id, why in slow:
        if f"long_run:{pk}" in raised:
            continue
        message = f"Job {job_id}: run {pk} is {why} (started {starts[pk]:%H:%M:%S %Z})"
        raise_alert(job_id, Rule.LONG_RUN, f"long_run:{pk}", message, found[job_id], pk)


def usual_durations(job_ids: Collection[str]) -> dict[str, float]:
    """Each job's usual duration: the median of its last USUAL_RUNS successes, in one query.

    A job with fewer successes than that has no usual duration yet, so a new job is not judged
    on its first, perhaps unusual, runs.
    """
    ranked = (
        Execution.objects.filter(
            job_id__in=list(job_ids), status=Execution.Status.SUCCEEDED, duration__isnull=False
        )
        .annotate(rank=Window(RowNumber(), partition_by=[F("job_id")], order_by=F("finished_at").desc()))
        .filter(rank__lte=USUAL_RUNS)
        .values_list("job_id", "duration")
    )
    durations: dict[str, list[float]] = {}
    for job_id, duration in ranked:
        if duration is not None:  # the filter's promise, said to the type checker
            durations.setdefault(job_id, []).append(duration)
    return {job_id: median(values) for job_id, values in durations.items() if len(values) == USUAL_RUNS}


def _silences(found: dict[str, AlertPolicy], now: datetime) -> None:
    last = dict(
        Execution.objects.filter(job_id__in=list(found), status=Execution.Status.SUCCEEDED)
        .values_list("job_id")
        .annotate(last=Max("finished_at"))
        .order_by()
    )
    created = dict(ScheduledJob.objects.filter(id__in=list(found)).values_list("id", "created_at"))
    silent = []
    for job_id, policy in found.items():
        since = last.get(job_id) or created.get(job_id)
        window = policy.no_success_within or 0
        if since is None or (now - since).total_seconds() < window:
            continue
        message = f"Job {job_id} has not succeeded within {window / 3600:g} h (last success: " + (
            f"{since:%Y-%m-%d %H:%M %Z})" if job_id in last else "never)"
        )
        silent.append((job_id, policy, f"no_success:{job_id}:{since.isoformat()}", message))
    raised = _raised({key for _, _, key, _ in silent})
    for job_id, policy, key, message in silent:
        if key not in raised:
            raise_alert(job_id, Rule.NO_SUCCESS, key, message, policy, opens=True, limited=False)


def _raised(keys: set[str]) -> set[str]:
    """Which of ``keys`` were raised already (one query): a look does not raise them again."""
    if not keys:
        return set()
    by_digest = {digest(key): key for key in keys}
    return {
        by_digest[found]
        for found in Alert.objects.filter(key__in=list(by_digest)).values_list("key", flat=True)
    }


def digest(key: str) -> str:
    """An alert's unique key as stored (see Alert.key)."""
    return hashlib.sha256(key.encode()).hexdigest()
