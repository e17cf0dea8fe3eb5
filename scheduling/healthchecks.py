"""A check for django-health-check 4.x: is an active scheduler beating?

Use it with that package's view, beside its other checks::

    path("ht/", HealthCheckView.as_view(checks=[..., "scheduling.healthchecks.Scheduler"]))

Importing this module needs django-health-check; nothing else in the app does.
"""

from __future__ import annotations

import dataclasses

from django.db import DatabaseError, connections
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from scheduling.conf import settings
from scheduling.models import SchedulerInstance


@dataclasses.dataclass
class Scheduler(HealthCheck):
    """Fails when no scheduler holds the lease and has beaten within SCHEDULING_HEARTBEAT_TIMEOUT.

    A maintenance pause is planned, not a failure: the check stays OK (django-health-check's
    answer has no room for more; the app's own health endpoint adds ``maintenance`` and ``until``).
    """

    def run(self) -> None:
        try:
            alive = SchedulerInstance.objects.alive().filter(role=SchedulerInstance.Role.ACTIVE).exists()
        except DatabaseError as exc:
            raise ServiceUnavailable("Cannot read the schedulers' heartbeats from the database") from exc
        finally:
            _close_connections()
        if not alive:
            raise ServiceUnavailable(
                f"No active scheduler has beaten in the last {settings.HEARTBEAT_TIMEOUT:g} s"
            )


def _close_connections() -> None:
    # django-health-check runs synchronous checks on a pool thread, where nothing would ever close
    # the connection the query opened; one inside a transaction is someone else's to close.
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
