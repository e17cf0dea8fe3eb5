"""One active scheduler per database: a lease row that the active scheduler keeps renewing.

Why a lease row rather than advisory locks: it works the same on PostgreSQL, MariaDB/MySQL and
SQLite; it survives connection loss (an advisory lock dies with its session, so a scheduler whose
connection was dropped would not notice it lost the lock until it asked); and its state is
visible to the admin. Taking and renewing are one conditional UPDATE each, so the database decides
who holds it.

Safety: the holder counts its lease from the moment *before* it sent the renewal, by its own
monotonic clock, and gives up ``SAFETY_MARGIN`` seconds before that runs out; a standby may only
take a lease whose ``expires_at`` has passed. So the old holder stops before a new one can start,
as long as the hosts' clocks agree to within the margin (run NTP). The database's unique
constraint on (job, scheduled time) remains the last line against a double run.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from scheduling import identity
from scheduling.conf import settings
from scheduling.models import Lease, SchedulerInstance

LEASE_NAME = "default"
SAFETY_MARGIN = 1.0  # seconds


class Leadership:
    def __init__(self, holder: uuid.UUID, duration: float | None = None) -> None:
        self.holder = holder
        self.duration = duration or settings.LEASE_DURATION
        self._valid_until = 0.0  # monotonic

    @property
    def held(self) -> bool:
        """Whether this process may schedule now, by its own clock (no database round trip)."""
        return time.monotonic() < self._valid_until

    def claim(self) -> bool:
        """Take the lease if it is free or expired, or renew it if ours; True if we hold it."""
        sent = time.monotonic()
        now = timezone.now()
        claimable = Lease.objects.filter(name=LEASE_NAME).filter(
            Q(holder=self.holder) | Q(holder__isnull=True) | Q(expires_at__lt=now)
        )
        if not self.held:
            # A holder proven dead (a process of this kernel and PID namespace that is gone: killed,
            # crashed) cannot be running anything: its lease need not be waited out. This makes a
            # restart instant. Any other holder, in another container for one, is waited out.
            claimable = claimable | Lease.objects.filter(name=LEASE_NAME, holder__in=dead_local_schedulers())
        taken = claimable.update(holder=self.holder, expires_at=now + timedelta(seconds=self.duration))
        if not taken and not Lease.objects.filter(name=LEASE_NAME).exists():
            # The row comes with the migrations; this only repairs a table emptied since.
            Lease.objects.get_or_create(name=LEASE_NAME)
            taken = claimable.update(holder=self.holder, expires_at=now + timedelta(seconds=self.duration))
        self._valid_until = sent + self.duration - SAFETY_MARGIN if taken else 0.0
        return bool(taken)

    def release(self) -> None:
        """Give the lease up at once, so a standby takes over without waiting for it to expire."""
        self._valid_until = 0.0
        Lease.objects.filter(name=LEASE_NAME, holder=self.holder).update(holder=None, expires_at=None)


def dead_local_schedulers() -> list[uuid.UUID]:
    """Schedulers of this kernel and PID namespace, not recorded as stopped, proven dead."""
    me = identity.current()
    if me is None:
        return []
    instances = SchedulerInstance.objects.filter(
        boot_id=me.boot_id, pid_namespace=me.pid_namespace, stopped_at__isnull=True
    ).only("pk", "pid", "boot_id", "pid_namespace", "process_started")
    return [instance.pk for instance in instances if identity.scheduler_dead(instance)]
