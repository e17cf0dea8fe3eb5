"""Fencing: every write of a dispatch pass carries the proof that its writer still leads.

A lease alone does not stop a leader that was frozen (SIGSTOP, a long pause, a slow database)
from finishing its pass after a standby took over: it would record and start a fire the new
leader runs too, or move a job back in time. So the lease has an epoch that grows at every
take-over, and each write of a pass is conditioned, in the same statement, on "holder H still
holds epoch E and it has not expired", judged by the database's clock. A write whose condition
fails changes nothing, and the pass ends with :class:`FenceLost`: the process stands down.

What remains: a statement that started before the expiry and commits after it (the database's
own execution time). The unique constraint on (job, scheduled time) and the compare-and-set of
the job store's rows catch what such a write could still overlap.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import Exists

from scheduling.dbclock import DatabaseNow
from scheduling.models import Lease

LEASE_NAME = "default"


class FenceLost(Exception):
    """A fenced write found the lease held by another epoch, or expired: stop leading now."""

    def __init__(self, fence: Fence, what: str) -> None:
        super().__init__(f"The lease of epoch {fence.epoch} was lost before it could {what}")
        self.fence = fence


@dataclass(frozen=True)
class Fence:
    """The lease as one holder took it: the condition of all its writes while it leads."""

    holder: uuid.UUID
    epoch: int

    def lease(self) -> Any:
        """The lease row, if this fence still holds it by the database's clock."""
        return Lease.objects.filter(
            name=LEASE_NAME, holder=self.holder, epoch=self.epoch, expires_at__gt=DatabaseNow()
        )

    def exists(self) -> Exists:
        """The condition as an ORM expression, for ``filter()``."""
        return Exists(self.lease())

    def sql(self, alias: str | None = None) -> tuple[str, list[Any]]:
        """The condition as SQL (``EXISTS (…)``) and its parameters, for hand-built statements."""
        connection = connections[alias or router.db_for_write(Lease)]
        query = self.lease().values("pk").query
        sql, params = query.get_compiler(connection=connection).as_sql()
        return f"EXISTS ({sql})", list(params)

    def holds(self) -> bool:
        return self.lease().exists()
