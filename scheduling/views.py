"""The health endpoint: is an active scheduler beating? For load balancers and probes."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from scheduling.queries import scheduler_status

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when an active scheduler has beaten recently, 503 otherwise; no job details leak.

    While paused for maintenance it adds ``"maintenance": true`` and ``"until"`` (or null).
    """
    try:
        status = scheduler_status()
    # The error's text may name hosts and credentials: the caller only learns which part failed.
    except DatabaseError:
        logger.exception("The health endpoint could not read the schedulers' heartbeats")
        body: dict[str, object] = {
            "status": "unavailable",
            "active_scheduler": None,
            "last_beat": None,
            "standbys": None,
        }
        return JsonResponse({**body, "reason": "The database cannot be read"}, status=503)
    body = {
        "status": "ok" if status.alive else "unavailable",
        "active_scheduler": status.alive,
        "last_beat": status.instance.last_beat.isoformat() if status.instance else None,
        "standbys": status.standbys,
    }
    if status.maintenance is not None:
        # A pause is planned, not a failure: still 200. Its reason and who set it may say more
        # than a probe should learn: only that there is one, and when it ends.
        until = status.maintenance.until
        body.update(maintenance=True, until=until.isoformat() if until else None)
    if not status.alive and status.standby_reason:
        # The reason itself may name functions and hosts: the probe learns only that there is one.
        body["reason"] = (
            "A scheduler is running but could not start scheduling; see its log or 'scheduling status'"
        )
    return JsonResponse(body, status=200 if status.alive else 503)
