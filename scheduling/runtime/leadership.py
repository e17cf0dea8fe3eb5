"""One active scheduler per database: a lease row that the active scheduler keeps renewing.

Why a lease row rather than advisory locks: it works the same on PostgreSQL, MariaDB/MySQL and
SQLite; it survives connection loss (an advisory lock dies with its session, so a scheduler whose
connection was dropped would not notice it lost the lock until it asked); and its state is
visible to the admin. Taking and renewing are one conditional UPDATE each, so the database decides
who holds it, and by its own clock: ``expires_at`` is written and compared as the database's time
(scheduling.dbclock), so no host's clock can make a lease look valid or expired to another.

Each take-over increases the lease's epoch; the holder's writes carry it (scheduling.fencing), so
a holder that lost the lease while frozen changes nothing when it wakes. Locally, the holder also
counts its lease from the moment *before* it sent the renewal, by its monotonic clock, and stops
dispatching ``SAFETY_MARGIN`` seconds before that runs out — a fast path that needs no database
round trip; the fence is what holds when that reasoning fails (a paused process, a slow reply).
"""

from __future__ import annotations

import time
import uuid

from django.db.models import F, Q

from scheduling import identity
from scheduling.conf import settings
from scheduling.dbclock import DatabaseNow, database_now_plus
from scheduling.fencing import LEASE_NAME, Fence
from scheduling.models import Lease, SchedulerInstance

SAFETY_MARGIN = 1.0  # seconds


class Leadership:
    def __init__(self, holder: uuid.UUID, duration: float | None = None) -> None:
        self.holder = holder
        self.duration = duration or settings.LEASE_DURATION
        self.fence: Fence | None = None  # the epoch this process holds, while it holds one
        self._valid_until = 0.0  # monotonic

    @property
    def held(self) -> bool:
        """Whether this process may schedule now, by its own clock (no database round trip)."""
        return self.fence is not None and time.monotonic() < self._valid_until

    def claim(self) -> bool:
        """Renew the lease if ours, else take it if free or expired; True if we hold it.

        A renewal keeps the epoch; it fails once the lease expired, even if nobody took it,
        and the next claim takes it afresh with a new epoch (the runner then starts over).
        """
        sent = time.monotonic()
        if self.fence is not None:
            renewed = self.fence.lease().update(expires_at=database_now_plus(self.duration))
            if not renewed:
                self._lost()
                return False
        else:
            self.fence = self._take()
            if self.fence is None:
                return False
        self._valid_until = sent + self.duration - SAFETY_MARGIN
        return True

    def release(self) -> None:
        """Give the lease up at once, so a standby takes over without waiting for it to expire."""
        fence, self.fence = self.fence, None
        self._valid_until = 0.0
        if fence is not None:
            Lease.objects.filter(name=LEASE_NAME, holder=fence.holder, epoch=fence.epoch).update(
                holder=None, expires_at=None
            )

    def _lost(self) -> None:
        self.fence = None
        self._valid_until = 0.0

    def _take(self) -> Fence | None:
        # A holder proven dead (a process of this kernel and PID namespace that is gone: killed,
        # crashed) cannot be running anything: its lease need not be waited out. This makes a
        # restart instant. Any other holder, in another container for one, is waited out.
        claimable = Lease.objects.filter(name=LEASE_NAME).filter(
            Q(holder__isnull=True)
            | Q(holder=self.holder)
            | Q(expires_at__isnull=True)
            | Q(expires_at__lte=DatabaseNow())
            | Q(holder__in=dead_local_schedulers())
        )
        take = {
            "holder": self.holder,
            "epoch": F("epoch") + 1,
            "expires_at": database_now_plus(self.duration),
        }
        taken = claimable.update(**take)
        if not taken and not Lease.objects.filter(name=LEASE_NAME).exists():
            # The row comes with the migrations; this only repairs a table emptied since.
            Lease.objects.get_or_create(name=LEASE_NAME)
            taken = claimable.update(**take)
        if not taken:
            return None
        epoch = (
            Lease.objects.filter(name=LEASE_NAME, holder=self.holder).values_list("epoch", flat=True).first()
        )
        return None if epoch is None else Fence(self.holder, epoch)


def dead_local_schedulers() -> list[uuid.UUID]:
    """Schedulers of this kernel and PID namespace, not recorded as stopped, proven dead."""
    me = identity.current()
    if me is None:
        return []
    instances = SchedulerInstance.objects.filter(
        boot_id=me.boot_id, pid_namespace=me.pid_namespace, stopped_at__isnull=True
    ).only("pk", "pid", "boot_id", "pid_namespace", "process_started")
    return [instance.pk for instance in instances if identity.scheduler_dead(instance)]
