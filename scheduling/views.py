"""The endpoints for machines: health (is an active scheduler beating?) and Prometheus metrics."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from scheduling import metrics_access
from scheduling.queries import scheduler_status

logger = logging.getLogger(__name__)

MISSING_CLIENT = (
    "The metrics need prometheus-client, which is not installed here: "
    "pip install 'django-scheduling[metrics]' (or pip install prometheus-client).\n"
)


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


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus metrics, for the readers ``SCHEDULING_METRICS_ACCESS`` names; 404 when off."""
    access = metrics_access.configured()
    if access is None:
        raise Http404("The metrics are off (SCHEDULING_METRICS_ACCESS)")
    refused = metrics_access.refusal(request, access)
    if refused is not None:
        return refused
    # Imported here: prometheus-client is optional, and scheduling.urls imports this module.
    try:
        from scheduling import metrics as exporter
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        return HttpResponse(MISSING_CLIENT, status=501, content_type="text/plain; charset=utf-8")
    try:
        body, content_type = exporter.exposition(request.headers.get("Accept", ""))
    # As for the health endpoint: the error's text may name hosts and credentials.
    except DatabaseError:
        logger.exception("The metrics endpoint could not read the database")
        return HttpResponse(
            "The database cannot be read\n", status=503, content_type="text/plain; charset=utf-8"
        )
    return HttpResponse(body, content_type=content_type)
