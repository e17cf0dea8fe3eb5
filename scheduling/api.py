"""The HTTP API for deploy scripts and other services: JSON over plain Django views.

Seven endpoints do not justify Django REST framework as a dependency. Like the admin, the views
only write intent (through ``control``); the running scheduler acts on it. A caller is a Django
user, by session (the admin's login; POSTs are CSRF-checked like any form) or by API token
(``Authorization: Bearer <key>``, no cookie, so no CSRF), and needs the admin's permissions:
``view_job`` to read, ``run_job``, ``pause_job`` or ``change_schedule`` to act.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.apps import apps
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from scheduling import control, tokens
from scheduling.models import Execution, Job
from scheduling.schedules import ScheduleError, normalize_spec
from scheduling.serializers import job_data, next_runs_data, run_data, status_data
from scheduling.status import job_summaries, job_summary, schedule_summary, scheduler_status

View = Callable[..., JsonResponse]
MAX_RUNS = 100
NEXT_RUNS = 5  # as the admin's job page shows
SCHEDULE_FIELDS = {"cron", "interval", "date", "timezone", "jitter"}
OPTION_FIELDS = {"max_instances", "coalesce", "misfire_grace_time"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.details = details

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": str(self), **self.details}, status=self.status)
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
                    raise ApiError(405, f"Use {method} here, not {request.method}")
                user = authenticate(request)
                if not user.has_perm(f"scheduling.{permission}"):
                    raise ApiError(403, f"This needs the permission 'scheduling.{permission}'")
                return view(request, user, **kwargs)
            except ApiError as exc:
                response = exc.response()
            except control.UnknownJobError as exc:
                response = ApiError(404, str(exc)).response()
            except control.JobLoadError as exc:
                response = ApiError(409, str(exc)).response()
            except ScheduleError as exc:
                response = ApiError(400, f"Invalid schedule: {exc}").response()
            if response.status_code == 405:
                response["Allow"] = method
            return response

        # Session requests are CSRF-checked in authenticate(); token requests carry no cookie.
        return csrf_exempt(never_cache(wrapper))

    return decorate


def authenticate(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "The Authorization header must be 'Bearer <API token>'")
        user = tokens.user_for(key.strip())
        if user is None:
            raise ApiError(401, "Unknown or revoked API token, or its user is deactivated")
        return user
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise ApiError(401, "Log in, or send 'Authorization: Bearer <API token>'")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        reason = _CsrfCheck(lambda request: None).process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            raise ApiError(403, f"CSRF check failed: {reason}")
    return user


@endpoint("GET", "view_job")
def status(request: HttpRequest, user: Any) -> JsonResponse:
    return JsonResponse(status_data(scheduler_status()))


@endpoint("GET", "view_job")
def job_list(request: HttpRequest, user: Any) -> JsonResponse:
    return JsonResponse({"jobs": [job_data(job) for job in job_summaries()]})


@endpoint("GET", "view_job")
def job_detail(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    limit = _runs_limit(request.GET.get("runs", "10"))
    return JsonResponse(_job_with_runs(job_id, limit))


@endpoint("POST", "run_job")
def run(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    control.run_now(job_id, requested_by=user.get_username())
    _log(user, job_id, "Requested a run now (API)")
    body: dict[str, Any] = {"job": job_id, "result": "run requested"}
    if not scheduler_status().alive:
        body["warning"] = "No scheduler is running: the run starts when 'manage.py runscheduler' does."
    return JsonResponse(body, status=202)


@endpoint("POST", "pause_job")
def pause(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    control.pause(job_id)
    _log(user, job_id, "Paused (API)")
    return JsonResponse(_job(job_id))


@endpoint("POST", "pause_job")
def resume(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    control.resume(job_id)
    _log(user, job_id, "Resumed (API)")
    return JsonResponse(_job(job_id))


@endpoint("POST", "change_schedule")
def reschedule(request: HttpRequest, user: Any, job_id: str) -> JsonResponse:
    schedule, options = _parse_reschedule(_json_object(request))
    control.load(job_id)  # 404 or 409 before anything is read or written
    before = schedule_summary(job_id)
    control.change(job_id, schedule=schedule, **options)
    _log(user, job_id, f"Changed the schedule from “{before}” to “{schedule_summary(job_id)}” (API)")
    return JsonResponse(_job(job_id))


def _job(job_id: str) -> dict[str, Any]:
    summary = job_summary(job_id)
    if summary is None:
        raise control.UnknownJobError(job_id)
    return job_data(summary)


def _job_with_runs(job_id: str, limit: int) -> dict[str, Any]:
    runs = Execution.objects.filter(job_id=job_id)[:limit]
    return {
        **_job(job_id),
        "runs": [run_data(run) for run in runs],
        "next_runs": next_runs_data(job_id, NEXT_RUNS),
    }


def _runs_limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_RUNS:
        raise ApiError(400, f"runs must be a whole number from 1 to {MAX_RUNS}, not {value!r}")
    return int(value)


def _json_object(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object")
    return body


def _parse_reschedule(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    unknown = sorted(set(body) - SCHEDULE_FIELDS - OPTION_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(SCHEDULE_FIELDS | OPTION_FIELDS))
        raise ApiError(400, f"Unknown field(s): {', '.join(unknown)}; allowed: {allowed}")
    kinds = [kind for kind in ("cron", "interval", "date") if kind in body]
    if len(kinds) > 1 or (not kinds and SCHEDULE_FIELDS & set(body)):
        raise ApiError(400, "Give exactly one of cron, interval or date (timezone and jitter go with it)")
    options = {name: _option(name, body[name]) for name in OPTION_FIELDS & set(body)}
    if not kinds and not options:
        raise ApiError(400, "Nothing to change: give cron, interval or date, or job options")
    if not kinds:
        return None, options
    spec = normalize_spec(
        **{kinds[0]: body[kinds[0]]},
        timezone_name=body.get("timezone"),
        jitter=body.get("jitter"),
    )
    if "date" in spec and datetime.fromisoformat(spec["date"]) <= timezone.now():
        raise ApiError(400, f"date {body['date']!r} is not in the future")
    return spec, options


def _option(name: str, value: Any) -> Any:
    if name == "coalesce":
        if not isinstance(value, bool):
            raise ApiError(400, f"coalesce must be true or false, not {value!r}")
        return value
    if name == "misfire_grace_time" and value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"{name} must be a whole number >= 1, not {value!r}")
    return value


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
