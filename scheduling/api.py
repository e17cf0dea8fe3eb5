"""The HTTP API for deploy scripts and other services: JSON over plain Django views.

A dozen endpoints do not justify Django REST framework as a dependency. Like the admin, the views
only write intent (through ``control``); the running scheduler acts on it. A caller is a Django
user, by session (the admin's login; POSTs are CSRF-checked like any form) or by API token
(``Authorization: Bearer <key>``, no cookie, so no CSRF), and needs the admin's permissions:
``view_job`` to read, ``run_job``, ``pause_job`` or ``change_schedule`` to act, and
``change_maintenance`` to pause every job for maintenance.

Every answer is JSON with a status the OpenAPI document (``scheduling.openapi``) lists; every
error is ``{"error": text, "code": stable identifier, "field": name or null}``. GETs never write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.apps import apps
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse, RawPostDataException
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from scheduling import control, safejson, tokens, validation
from scheduling.models import Execution, Job, Maintenance
from scheduling.queries import calendar_summaries, job_page, job_summary, schedule_summary, scheduler_status
from scheduling.schedules import ScheduleError
from scheduling.serializers import (
    calendar_data,
    job_data,
    maintenance_data,
    next_runs_data,
    run_data,
    status_data,
)

logger = logging.getLogger(__name__)

View = Callable[..., JsonResponse]
MAX_RUNS = 100
NEXT_RUNS = 5  # as the admin's job page shows
MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_BODY_BYTES = 16 * 1024  # a reschedule body is a few hundred bytes
RUN_FIELDS = {"args", "kwargs", "force"}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_CURSOR_LENGTH = 2 * 4 * validation.MAX_TEXT_LENGTH  # the hex of 255 characters of 4 bytes
SCHEDULE_FIELDS = {"cron", "interval", "date", "timezone", "jitter"}
OPTION_FIELDS = {
    "max_instances",
    "coalesce",
    "misfire_grace_time",
    "timeout",
    "calendars",
    "overlap",
    "lock",
    "alert",
    *validation.RETRY_OPTION_NAMES,
}


class ApiError(Exception):
    """An answer other than success: its status, a stable ``code`` and the ``field`` at fault."""

    def __init__(self, status: int, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field

    def response(self) -> JsonResponse:
        body = {"error": str(self), "code": self.code, "field": self.field}
        response = JsonResponse(body, status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="scheduling"'
        return response


class _CsrfCheck(CsrfViewMiddleware):
    # The middleware answers a failure with Django's HTML page; the API needs the reason as JSON.
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def endpoint(method: str, permission: str) -> Callable[[View], View]:
    """Method check, authentication, permission and errors as JSON, for one API view."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, **kwargs: Any) -> JsonResponse:
            try:
                if request.method != method:
                    raise ApiError(
                        405,
                        _("Use %(allowed)s here, not %(method)s")
                        % {"allowed": method, "method": request.method},
                        "method_not_allowed",
                    )
                user = authenticate(request)
                if not user.has_perm(f"scheduling.{permission}"):
                    raise ApiError(
                        403,
                        _("This needs the permission '%(permission)s'")
                        % {"permission": f"scheduling.{permission}"},
                        "permission_denied",
                    )
                if "job_id" in kwargs:
                    validation.job_id(kwargs["job_id"])
                return view(request, user, **kwargs)
            except ApiError as exc:
                response = exc.response()
            except control.UnknownJobError as exc:
                response = ApiError(404, str(exc), "unknown_job").response()
            except control.JobLoadError as exc:
                response = ApiError(409, str(exc), "job_cannot_be_loaded").response()
            except control.UnknownRunError as exc:
                response = ApiError(404, str(exc), "unknown_run").response()
            except control.RunEndedError as exc:
                response = ApiError(409, str(exc), "run_ended").response()
            except control.MaintenanceError as exc:
                response = ApiError(409, str(exc), "paused_for_maintenance").response()
            except validation.InputError as exc:
                response = ApiError(400, str(exc), exc.code, exc.field).response()
            except ScheduleError as exc:
                response = ApiError(
                    400, _("Invalid schedule: %(error)s") % {"error": exc}, "invalid_schedule", "schedule"
                ).response()
            # The contract is JSON for every answer: a bug is logged and answered as such.
            except Exception:
                logger.exception("The API failed on %s %s", request.method, request.path)
                response = ApiError(
                    500, _("Internal error; it is logged on the server"), "internal_error"
                ).response()
            if response.status_code == 405:
                response["Allow"] = method
            return response

        wrapper.http_method = method  # type: ignore[attr-defined]  # read by the OpenAPI document's test
        # Session requests are CSRF-checked in authenticate(); token requests carry no cookie.
        return csrf_exempt(never_cache(wrapper))

    return decorate


def authenticate(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, __, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401, _("The Authorization header must be 'Bearer <API token>'"), "not_authenticated"
            )
        user = tokens.user_for(key.strip())
        if user is None:
            raise ApiError(
                401, _("Unknown or revoked API token, or its user is deactivated"), "not_authenticated"
            )
        return user
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise ApiError(401, _("Log in, or send 'Authorization: Bearer <API token>'"), "not_authenticated")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        reason = _CsrfCheck(lambda request: None).process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            raise ApiError(403, _("CSRF check failed: %(reason)s") % {"reason": reason}, "csrf_failed")
    return user


@endpoint("GET", "view_job")
def status(request: HttpRequest, user: Any) -> JsonResponse:
    return JsonResponse(status_data(scheduler_status()))


@endpoint("GET", "view_job")
def job_list(request: HttpRequest, user: Any) -> JsonResponse:
    limit = _limit(request)
    jobs, last = job_page(limit, after=_job_cursor(request))
    return JsonResponse({"jobs": [job_data(job) for job in jobs], "next": _encode(last)})


@endpoint("GET", "view_job")
def job_detail(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    limit = validation.whole_number_text("runs", request.GET.get("runs", "10"), 1, MAX_RUNS)
    runs = Execution.objects.listed().filter(job_id=job_id)[:limit]
    return JsonResponse(
        {
            **_job(job_id),
            "runs": [run_data(run) for run in runs],
            "next_runs": next_runs_data(job_id, NEXT_RUNS),
        }
    )


@endpoint("GET", "view_job")
def run_list(request: HttpRequest, user: Any) -> JsonResponse:
    """Runs, newest first; ``?job=<id>`` keeps one job's."""
    limit = _limit(request)
    runs = Execution.objects.listed().order_by("-id")
    if "job" in request.GET:
        runs = runs.filter(job_id=validation.job_id(request.GET["job"], "job"))
    cursor = _run_cursor(request)
    if cursor is not None:
        runs = runs.filter(id__lt=cursor)
    page = list(runs[: limit + 1])
    last = str(page[limit - 1].pk) if len(page) > limit else None
    return JsonResponse({"runs": [run_data(run) for run in page[:limit]], "next": last})


@endpoint("GET", "view_job")
def run_detail(request: HttpRequest, user: Any, run_id: int) -> JsonResponse:
    run = Execution.objects.filter(pk=run_id).first() if run_id < 2**63 else None
    if run is None:
        raise ApiError(404, _("No run with id %(run)s") % {"run": run_id}, "unknown_run")
    return JsonResponse({**run_data(run), "job": run.job_id, "output": run.output})


@endpoint("POST", "cancel_run")
def cancel(request: HttpRequest, user: Any, run_id: int) -> JsonResponse:
    """Cancel a run: one waiting for a task worker ends at once; a running one is stopped by the
    process running it (202: it is recorded cancelled when it has ended)."""
    if run_id >= 2**63:
        raise control.UnknownRunError(run_id)
    run = control.cancel(run_id, user.get_username())
    _log(user, run.job_id, f"Asked to cancel run {run.pk} (API)")
    ended = run.status == Execution.Status.CANCELLED
    return JsonResponse(
        {**run_data(run), "job": run.job_id, "result": "cancelled" if ended else "cancel requested"},
        status=200 if ended else 202,
    )


@endpoint("POST", "run_job")
def run(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    """Run now. An optional JSON body: ``args`` and ``kwargs`` replace the job's own arguments for
    this run (checked against its function's signature by control.run_now); ``force: true`` runs
    it even while the scheduler is paused for maintenance."""
    # A form's POST (a session's, CSRF-checked, which reads the form) has no options.
    given = {} if request.content_type in FORM_TYPES else _json_object(request)
    _refuse_unknown(given, RUN_FIELDS)
    force = validation.flag("force", given.get("force", False))
    requested = control.run_now(
        job_id,
        requested_by=user.get_username(),
        args=given.get("args"),
        kwargs=given.get("kwargs"),
        force=force,
    )
    _log(user, job_id, f"{control.run_now_message(requested)} (API)")
    body: dict[str, Any] = {"job": job_id, "result": "run requested"}
    if not scheduler_status().alive:
        body["warning"] = "No scheduler is running: the run starts when 'manage.py runscheduler' does."
    return JsonResponse(body, status=202)


@endpoint("POST", "pause_job")
def pause(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    control.pause(job_id)
    _log(user, job_id, "Paused (API)")
    return JsonResponse(_reply(user, job_id, "paused"))


@endpoint("POST", "pause_job")
def resume(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    control.resume(job_id)
    _log(user, job_id, "Resumed (API)")
    return JsonResponse(_reply(user, job_id, "resumed"))


@endpoint("POST", "change_schedule")
def reschedule(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    schedule, options = _parse_reschedule(_json_object(request))
    control.load(job_id)  # 404 or 409 before anything is read or written
    before = schedule_summary(job_id)
    control.change(job_id, schedule=schedule, **options)
    _log(user, job_id, f"Changed the schedule from “{before}” to “{schedule_summary(job_id)}” (API)")
    return JsonResponse(_reply(user, job_id, "rescheduled"))


@endpoint("GET", "view_calendar")
def calendar_list(request: HttpRequest, user: Any) -> JsonResponse:
    return JsonResponse({"calendars": [calendar_data(found) for found in calendar_summaries()]})


@endpoint("GET", "view_calendar")
def calendar_detail(request: HttpRequest, user: Any, name: str) -> JsonResponse:
    found = calendar_summaries(validation.text("name", name))
    if not found:
        raise ApiError(404, _("No calendar named %(name)r") % {"name": name}, "unknown_calendar")
    return JsonResponse(calendar_data(found[0]))


@endpoint("GET", "view_job")
def maintenance_status(request: HttpRequest, user: Any) -> JsonResponse:
    return JsonResponse({"maintenance": maintenance_data(control.maintenance())})


@endpoint("POST", "change_maintenance")
def maintenance_start(request: HttpRequest, user: Any) -> JsonResponse:
    """Body ``{"reason": text, "until": ISO 8601 or null}``: pause, or change the pause."""
    body = _json_object(request)
    _refuse_unknown(body, {"reason", "until"})
    if "reason" not in body:
        raise ApiError(
            400, _("reason is required: it is recorded on every skipped run"), "required", "reason"
        )
    pause = control.start_maintenance(body["reason"], user.get_username(), body.get("until"))
    _log_maintenance(user, f"Paused for maintenance: {pause.stored_text()} (API)")
    return JsonResponse({"maintenance": maintenance_data(pause)})


@endpoint("DELETE", "change_maintenance")
def maintenance_end(request: HttpRequest, user: Any) -> JsonResponse:
    if control.end_maintenance():
        _log_maintenance(user, "Lifted the maintenance pause (API)")
    return JsonResponse({"maintenance": None})


def methods(*views: View) -> View:
    """One URL answered by several endpoints, one per method (each checks its own permission)."""
    by_method = {view.http_method: view for view in views}  # type: ignore[attr-defined]

    @csrf_exempt
    @never_cache
    def view(request: HttpRequest, **kwargs: Any) -> JsonResponse:
        chosen = by_method.get(request.method or "")
        if chosen is None:
            allowed = ", ".join(by_method)
            response = ApiError(
                405,
                _("Use %(allowed)s here, not %(method)s") % {"allowed": allowed, "method": request.method},
                "method_not_allowed",
            ).response()
            response["Allow"] = allowed
            return response
        return chosen(request, **kwargs)

    view.http_methods = list(by_method)  # type: ignore[attr-defined]  # read by the OpenAPI document's test
    return view


maintenance = methods(maintenance_status, maintenance_start, maintenance_end)


@csrf_exempt  # a session POST is CSRF-checked in authenticate(), answered as JSON
@never_cache
def not_found(request: HttpRequest, rest: str) -> JsonResponse:
    """Any other URL under api/: a JSON 404, after the same authentication as the API's views."""
    try:
        authenticate(request)
    except ApiError as exc:
        return exc.response()
    return ApiError(404, _("No API endpoint at %(path)r") % {"path": request.path}, "not_found").response()


def _reply(user: Any, job_id: str, result: str) -> dict[str, Any]:
    """What an action answers: the job as a GET shows it, to a user who may view jobs only."""
    if user.has_perm("scheduling.view_job"):
        return {**_job(job_id), "result": result}
    return {"id": job_id, "result": result}


def _job(job_id: str) -> dict[str, Any]:
    summary = job_summary(job_id)
    if summary is None:
        raise control.UnknownJobError(job_id)
    return job_data(summary)


def _limit(request: HttpRequest) -> int:
    return validation.whole_number_text("limit", request.GET.get("limit", str(DEFAULT_PAGE)), 1, MAX_PAGE)


def _job_cursor(request: HttpRequest) -> str:
    """The id a page of jobs starts after, from the ``next`` of the page before ("" for the first).

    The cursor is the id's UTF-8 in hex: opaque, URL-safe, and any even run of hex digits is a
    position (a made-up one simply starts the page somewhere), so only its shape can be wrong.
    """
    if "cursor" not in request.GET:
        return ""
    cursor = request.GET["cursor"]
    if len(cursor) > MAX_CURSOR_LENGTH or not re.fullmatch(r"(?:[0-9a-f]{2})+", cursor):
        raise ApiError(
            400, _("cursor must be the 'next' value of the page before"), "invalid_cursor", "cursor"
        )
    return bytes.fromhex(cursor).decode(errors="replace").replace("\x00", "")


def _run_cursor(request: HttpRequest) -> int | None:
    """The id a page of runs starts below (runs come newest first)."""
    if "cursor" not in request.GET:
        return None
    cursor = request.GET["cursor"]
    if not re.fullmatch(r"[0-9]{1,18}", cursor):
        raise ApiError(
            400, _("cursor must be the 'next' value of the page before"), "invalid_cursor", "cursor"
        )
    return int(cursor)


def _encode(position: str | None) -> str | None:
    return position.encode().hex() if position is not None else None


def _json_object(request: HttpRequest) -> dict[str, Any]:
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isascii() and declared.isdigit() and int(declared[:12]) > MAX_BODY_BYTES:
        raise ApiError(
            413, _("The body may be at most %(bytes)d bytes") % {"bytes": MAX_BODY_BYTES}, "too_large"
        )
    try:
        body = safejson.loads(_raw_body(request) or b"{}", max_length=MAX_BODY_BYTES)
    except RequestDataTooBig:
        raise ApiError(
            413, _("The body may be at most %(bytes)d bytes") % {"bytes": MAX_BODY_BYTES}, "too_large"
        ) from None
    except safejson.JsonInputError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    if not isinstance(body, dict):
        raise ApiError(400, _("The body must be a JSON object"), "invalid_body")
    return body


def _refuse_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(
            400,
            _("Unknown field(s): %(fields)s; allowed: %(allowed)s")
            % {"fields": ", ".join(unknown), "allowed": ", ".join(sorted(allowed))},
            "unknown_field",
            unknown[0],
        )


def _raw_body(request: HttpRequest) -> bytes:
    """The body, where an empty form (what many clients send on a bare POST) counts as none."""
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return request.body
    refused = ApiError(
        400, _("The body must be a JSON object (Content-Type: application/json)"), "invalid_body"
    )
    try:
        raw: bytes | None = request.body
    except RawPostDataException:  # the CSRF check of a session request read the form first
        raw = None
    try:
        empty = not request.POST and not request.FILES
    except MultiPartParserError:  # e.g. multipart/form-data without a boundary
        raise refused from None
    if empty:
        return b""
    if raw is None:
        raise refused
    return raw


def _parse_reschedule(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    unknown = sorted(set(body) - SCHEDULE_FIELDS - OPTION_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(SCHEDULE_FIELDS | OPTION_FIELDS))
        raise ApiError(
            400,
            _("Unknown field(s): %(fields)s; allowed: %(allowed)s")
            % {"fields": ", ".join(unknown), "allowed": allowed},
            "unknown_field",
            unknown[0],
        )
    kinds = [kind for kind in ("cron", "interval", "date") if kind in body]
    if len(kinds) > 1 or (not kinds and SCHEDULE_FIELDS & set(body)):
        raise ApiError(
            400,
            _("Give exactly one of cron, interval or date (timezone and jitter go with it)"),
            "invalid_schedule",
            "schedule",
        )
    options = validation.options({name: body[name] for name in OPTION_FIELDS & set(body)})
    if not kinds and not options:
        raise ApiError(
            400, _("Nothing to change: give cron, interval or date, or job options"), "nothing_to_change"
        )
    if not kinds:
        return None, options
    spec = validation.schedule(
        **{kinds[0]: body[kinds[0]]},
        timezone_name=body.get("timezone"),
        jitter=body.get("jitter"),
    )
    if "date" in spec and datetime.fromisoformat(spec["date"]) <= timezone.now():
        raise ApiError(
            400, _("date %(date)r is not in the future") % {"date": body["date"]}, "date_in_past", "date"
        )
    return spec, options


def _log_maintenance(user: Any, message: str) -> None:
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=Maintenance.objects.filter(pk=Maintenance.SINGLETON),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


def _log(user: Any, job_id: str, message: str) -> None:
    """Record the action in the admin's history, like the admin's own actions."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=Job.objects.filter(id=job_id),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )
