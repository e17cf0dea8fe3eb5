"""The scheduler's alert thread: raises what the signals reported, looks for recoveries, long
runs and silences, and sends the queued deliveries — never in the loop's thread, so a slow mail
server or webhook cannot delay a run.

Only while its scheduler leads does it look and send: one process does it per database. It
looks at once when this process queued a delivery, at the heartbeat (every
SCHEDULING_HEARTBEAT_INTERVAL) when the service's one-statement look
(``housekeeping.pending_work``) found open alerts or deliveries due, and once a minute for
silences and long runs. A delivery that fails is tried again with backoff (30 s,
doubling, up to an hour) and given up after MAX_ATTEMPTS; every attempt is recorded (AlertAttempt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from scheduling.fencing import Fence
from scheduling.history import alerts
from scheduling.models import AlertAttempt, AlertDelivery
from scheduling.policy import shown_destination
from scheduling.runtime import alert_channels

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
FIRST_BACKOFF = 30.0
MAX_BACKOFF = 3600.0
SILENCE_LOOK_INTERVAL = 60.0
DELIVERIES_PER_LOOK = 50
MAX_ERROR = 2000  # characters of a failed attempt's error kept
CLAIM_SECONDS = 300.0  # a delivery claimed by a sender that died is sent again after this


class AlertWatch:
    def __init__(self, leading: Callable[[], bool], fence: Callable[[], Fence | None] = lambda: None) -> None:
        self.leading = leading
        self.fence = fence  # the lease this process holds: the condition of each claim to send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduling-alerts", daemon=True)

    def start(self) -> None:
        alerts.receiver.deferred = True
        alerts.receiver.wake = alerts.delivery_due.set
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        alerts.delivery_due.set()
        self._thread.join(timeout)
        alerts.receiver.deferred = False

    def _run(self) -> None:
        try:
            timed_look = time.monotonic()
            while not self._stop.is_set():
                # Woken when this process queued a delivery, or when the heartbeat's one-statement
                # look found open alerts or deliveries due; and once a minute, by the clock of this
                # loop alone (not the time a look took), for silences and runs too long.
                # A wait that timed out is the timer, even if it returned a hair before its time.
                woken = alerts.delivery_due.wait(max(timed_look - time.monotonic(), 0.0))
                alerts.delivery_due.clear()
                if self._stop.is_set():
                    break
                silences = not woken or time.monotonic() >= timed_look
                if silences:
                    timed_look = time.monotonic() + SILENCE_LOOK_INTERVAL
                try:
                    self.once(silences)
                except DatabaseError as exc:
                    logger.warning("Alerts: the database failed (%s); trying again later", exc)
                    connections.close_all()
                # The thread must outlive any surprise; the next look starts afresh.
                except Exception:
                    logger.exception("Alerts: unexpected error; trying again later")
            # What the signals reported before the stop is still raised.
            alerts.receiver.drain()
        finally:
            connections.close_all()

    def once(self, silences: bool = True) -> None:
        """One look: raise what was reported, then, when leading, recoveries, (with ``silences``)
        runs too long and silences, and sends."""
        alerts.receiver.drain()
        if not self.leading():
            return
        alerts.look(silences=silences)
        deliver_due(self.fence())


def deliver_due(fence: Fence | None = None) -> int:
    """Send the deliveries whose time has come; returns how many were sent.

    Each is claimed before it is sent — its next attempt moved CLAIM_SECONDS on, compared and
    set, and fenced by the lease — so two schedulers (one frozen, one that took over) never both
    send it, and one that dies while sending leaves it to be sent again once the claim runs out.
    """
    now = timezone.now()
    due = list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
        .select_related("alert")
        .order_by("next_attempt_at", "pk")[:DELIVERIES_PER_LOOK]
    )
    sent = 0
    for delivery in due:
        if not _claim(delivery, fence):
            continue
        try:
            alert_channels.send(delivery.alert, delivery.destination)
        # Whatever the mail server, the network or the receiver did: recorded, tried again.
        except Exception as exc:
            _failed(delivery, f"{type(exc).__name__}: {exc}")
            continue
        now = timezone.now()
        with transaction.atomic(using=router.db_for_write(AlertDelivery)):
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=AlertDelivery.Status.SENT, attempts=delivery.attempts + 1, sent_at=now, last_error=""
            )
            AlertAttempt.objects.create(delivery=delivery, number=delivery.attempts + 1, at=now)
        sent += 1
    return sent


def _claim(delivery: AlertDelivery, fence: Fence | None) -> bool:
    claim = AlertDelivery.objects.filter(
        pk=delivery.pk, status=AlertDelivery.Status.PENDING, next_attempt_at=delivery.next_attempt_at
    )
    if fence is not None:
        claim = claim.filter(fence.exists())
    return bool(claim.update(next_attempt_at=timezone.now() + timedelta(seconds=CLAIM_SECONDS)))


def _failed(delivery: AlertDelivery, error: str) -> None:
    attempts = delivery.attempts + 1
    changes: dict[str, object]
    if attempts >= MAX_ATTEMPTS:
        logger.error(
            "Alert %s to %s given up after %d attempts: %s",
            delivery.alert_id,
            shown_destination(delivery.destination),
            attempts,
            error,
        )
        changes = {"status": AlertDelivery.Status.FAILED, "next_attempt_at": None}
    else:
        wait = min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF)
        logger.warning(
            "Alert %s to %s failed (%s); trying again in %g s",
            delivery.alert_id,
            shown_destination(delivery.destination),
            error,
            wait,
        )
        changes = {"next_attempt_at": timezone.now() + timedelta(seconds=wait)}
    with transaction.atomic(using=router.db_for_write(AlertDelivery)):
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts, last_error=error[:MAX_ERROR], **changes
        )
        AlertAttempt.objects.create(
            delivery=delivery, number=attempts, at=timezone.now(), error=error[:MAX_ERROR]
        )
