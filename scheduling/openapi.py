"""The HTTP API's contract: an OpenAPI 3.1 document, served at ``api/openapi.json``.

Written out by hand beside ``api.py`` (no framework generates it): ``tests/test_openapi.py`` checks
that it lists exactly the API's routes, and Schemathesis fuzzes the live API against it. To
extend it, add a schema to ``_schemas()`` and an operation to ``_paths()``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache

from scheduling import api, safejson, validation
from scheduling.models import Execution
from scheduling.policy import ALERT_EVENTS

ERROR_STATUSES = {
    "400": "Invalid input: a parameter or the body breaks a rule (``field`` names it).",
    "401": "Not authenticated: no session and no valid token.",
    "403": "Authenticated, without the permission this needs (or a failed CSRF check).",
    "404": "No such job, run or calendar.",
    "405": "Wrong method; ``Allow`` names the right one.",
    "409": (
        "The job cannot be loaded now (its function was renamed or removed in a deploy; code "
        "`job_cannot_be_loaded`), or the scheduler is paused for maintenance and the run was not "
        "forced (code `paused_for_maintenance`)."
    ),
    "413": "The body is larger than the limit.",
    "500": "A bug; it is logged on the server. The body has the usual error shape.",
}
_READ = ("400", "401", "403", "405", "500")
_ACT = ("400", "401", "403", "404", "405", "409", "500")


@never_cache
def document(request: HttpRequest) -> JsonResponse:
    """The document, for the site the request came to (the API's prefix depends on the include)."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(
            {"error": f"Use GET here, not {request.method}", "code": "method_not_allowed", "field": None},
            status=405,
        )
        response["Allow"] = "GET"
        return response
    namespace = request.resolver_match.namespace if request.resolver_match else "scheduling"
    prefix = reverse(f"{namespace}:api-status").removesuffix("api/status/")
    return JsonResponse(build(prefix.rstrip("/")))


document.http_method = "GET"  # type: ignore[attr-defined]


def build(server: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scheduling HTTP API",
            "version": "1",
            "description": (
                "Scheduled jobs of a Django site: read them and their runs, run, pause, resume and "
                "reschedule them, and pause them all for maintenance. Every error is "
                "`{error, code, field}`; lists are paginated with `limit` and `cursor`."
            ),
        },
        "servers": [{"url": server}],
        "security": [{"token": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from `manage.py scheduling token create`.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "The admin's login session; POSTs also need the CSRF token (X-CSRFToken).",
                },
            },
            "schemas": _schemas(),
            "responses": {
                status: {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for status, text in ERROR_STATUSES.items()
            },
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}}


def _errors(statuses: tuple[str, ...]) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{status}"} for status in statuses}


def _integer(
    name: str, where: str, low: int, high: int, text: str, default: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": where, "required": where == "path", "description": text, "schema": schema}


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The job's id; it may contain slashes.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": validation.MAX_TEXT_LENGTH,
        "pattern": validation.JOB_ID_PATTERN,  # as validation.job_id refuses: blank, control characters
    },
    "example": "reports/nightly",
}
LIMIT = _integer("limit", "query", 1, api.MAX_PAGE, "How many items per page.", default=api.DEFAULT_PAGE)


def _cursor(pattern: str, max_length: int) -> dict[str, Any]:
    return {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `next` of the page before (opaque); leave out for the first page.",
        "schema": {"type": "string", "pattern": pattern, "maxLength": max_length},
    }


def _action(summary: str, permission: str, status: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": summary.split()[0].lower() + "Job",
            "summary": summary,
            "description": f"Needs `scheduling.{permission}`.",
            "parameters": [JOB_ID],
            "responses": {**_ok(summary, schema, status), **_errors(_ACT)},
        }
    }


def _run_action() -> dict[str, Any]:
    action = _action("Run the job now", "run_job", "202", "RunRequested")
    action["post"]["description"] += (
        " With a body, the run uses its `args` and/or `kwargs` instead of the job's own, this once: "
        "they must fit the job's function (400 names the parameter) and are recorded on the run. "
        "Refused (409) while paused for maintenance, unless `force` is true."
    )
    action["post"]["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": _ref("RunOptions")}},
    }
    action["post"]["responses"].update(_errors(("413",)))
    return action


def _paths() -> dict[str, Any]:
    return {
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {"description": "The OpenAPI document", "content": {"application/json": {}}},
                    **_errors(("405",)),
                },
            }
        },
        "/api/status/": {
            "get": {
                "operationId": "status",
                "summary": "Is a scheduler active, and how the jobs and the last hour's runs stand",
                "description": "Needs `scheduling.view_job`.",
                "responses": {**_ok("The status", "Status"), **_errors(_READ)},
            }
        },
        "/api/maintenance/": {
            "get": {
                "operationId": "getMaintenance",
                "summary": "The maintenance pause in force, or null",
                "description": "Needs `scheduling.view_job`. A pause whose `until` has passed is over.",
                "responses": {**_ok("The pause", "MaintenanceState"), **_errors(_READ)},
            },
            "post": {
                "operationId": "startMaintenance",
                "summary": "Pause every job for maintenance (or change the pause)",
                "description": (
                    "Needs `scheduling.change_maintenance`. No new run starts: each fire is recorded "
                    "skipped with the reason; runs going on finish; run requests are refused unless "
                    "forced. It lifts itself at `until`."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("MaintenanceStart")}},
                },
                "responses": {**_ok("The pause", "MaintenanceState"), **_errors((*_READ, "413"))},
            },
            "delete": {
                "operationId": "endMaintenance",
                "summary": "Lift the maintenance pause",
                "description": "Needs `scheduling.change_maintenance`. Lifting no pause is not an error.",
                "responses": {**_ok("No pause", "MaintenanceState"), **_errors(_READ)},
            },
        },
        "/api/jobs/": {
            "get": {
                "operationId": "listJobs",
                "summary": "The jobs, in id order, a page at a time",
                "description": "Needs `scheduling.view_job`.",
                "parameters": [LIMIT, _cursor("^(?:[0-9a-f]{2})+$", api.MAX_CURSOR_LENGTH)],
                "responses": {**_ok("A page of jobs", "JobPage"), **_errors(_READ)},
            }
        },
        "/api/jobs/{job_id}/": {
            "get": {
                "operationId": "getJob",
                "summary": "One job and its most recent runs",
                "description": "Needs `scheduling.view_job`.",
                "parameters": [
                    JOB_ID,
                    _integer("runs", "query", 1, api.MAX_RUNS, "How many recent runs.", default=10),
                ],
                "responses": {**_ok("The job", "JobDetail"), **_errors((*_READ, "404"))},
            }
        },
        "/api/jobs/{job_id}/run/": _run_action(),
        "/api/jobs/{job_id}/pause/": _action("Pause the job", "pause_job", "200", "ActionReply"),
        "/api/jobs/{job_id}/resume/": _action("Resume the job", "pause_job", "200", "ActionReply"),
        "/api/jobs/{job_id}/reschedule/": {
            "post": {
                "operationId": "rescheduleJob",
                "summary": "Change the job's schedule and options",
                "description": (
                    "Needs `scheduling.change_schedule`. A job declared in code keeps the change, "
                    "flagged as overridden, until it is reset."
                ),
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Reschedule")}},
                },
                "responses": {**_ok("The job as changed", "ActionReply"), **_errors((*_ACT, "413"))},
            }
        },
        "/api/calendars/": {
            "get": {
                "operationId": "listCalendars",
                "summary": "The exclusion calendars, by name, with their periods and the jobs naming them",
                "description": "Needs `scheduling.view_calendar`.",
                "responses": {**_ok("The calendars", "CalendarList"), **_errors(_READ)},
            }
        },
        "/api/calendars/{name}/": {
            "get": {
                "operationId": "getCalendar",
                "summary": "One exclusion calendar",
                "description": "Needs `scheduling.view_calendar`.",
                "parameters": [
                    {
                        **JOB_ID,
                        "name": "name",
                        "description": "The calendar's name; it may contain slashes.",
                        "example": "Holidays DE",
                    }
                ],
                "responses": {**_ok("The calendar", "Calendar"), **_errors((*_READ, "404"))},
            }
        },
        "/api/runs/": {
            "get": {
                "operationId": "listRuns",
                "summary": "Runs, newest first, a page at a time",
                "description": "Needs `scheduling.view_job`.",
                "parameters": [
                    LIMIT,
                    _cursor("^[0-9]{1,18}$", 18),
                    {
                        **JOB_ID,
                        "name": "job",
                        "in": "query",
                        "required": False,
                        "description": "Only this job's.",
                    },
                ],
                "responses": {**_ok("A page of runs", "RunPage"), **_errors(_READ)},
            }
        },
        "/api/runs/{run_id}/": {
            "get": {
                "operationId": "getRun",
                "summary": "One run",
                "description": "Needs `scheduling.view_job`.",
                "parameters": [{**_integer("run_id", "path", 1, 2**63 - 1, "The run's id."), "example": 1}],
                "responses": {**_ok("The run", "RunDetail"), **_errors((*_READ, "404"))},
            }
        },
        "/api/runs/{run_id}/cancel/": {
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel a run",
                "description": (
                    "Needs `scheduling.cancel_run`. A run waiting for a task worker is cancelled at once "
                    "(200); a running one is stopped by the process running it and recorded cancelled "
                    "when it has ended (202). A run a cancel ended is answered as cancelled again "
                    "(200). 409: the run has ended already, other than by a cancel."
                ),
                "parameters": [{**_integer("run_id", "path", 1, 2**63 - 1, "The run's id."), "example": 1}],
                "responses": {
                    **_ok("Cancelled (before it started, or by an earlier cancel)", "CancelReply"),
                    **_ok("Cancel requested", "CancelReply", "202"),
                    **_errors(_ACT),
                },
            }
        },
    }


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _schemas() -> dict[str, Any]:
    time = _nullable("string", format="date-time")
    job: dict[str, Any] = {
        "type": "object",
        "required": ["id", "name", "function", "schedule", "next_run", "state"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "function": {"type": "string", "description": "The dotted path of the function it runs."},
            "schedule": {"type": "string", "description": "The schedule in words."},
            "next_run": time,
            "state": {"type": "string", "description": "scheduled, paused, or broken: <why>, with notes."},
            "timeout": {
                "type": ["integer", "null"],
                "description": "Seconds a run may take; null: no limit.",
            },
            "calendars": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Exclusion calendars: fires inside their periods are skipped.",
            },
            "lock": {
                "type": ["string", "null"],
                "description": "The lock it shares with other jobs (never two running at once); null: none.",
            },
            "alert": {
                "type": ["object", "null"],
                "description": "The job's own alerts (as in the reschedule body); null: the site's.",
            },
        },
    }
    run = {
        "type": "object",
        "required": ["id", "scheduled_at", "started_at", "finished_at", "status", "duration", "origin"],
        "properties": {
            "id": {"type": "integer"},
            "scheduled_at": time,
            "started_at": time,
            "finished_at": time,
            "status": {"type": "string", "enum": [status.value for status in Execution.Status]},
            "duration": _nullable("number"),
            "origin": {"type": "string"},
            "requested_by": {"type": "string"},
            "ran_in": {"type": "string"},
            "host": {"type": "string"},
            "task_id": {"type": "string"},
            "exception": {"type": "string"},
            "args": _nullable("array", description="The arguments it ran with, when not the job's own."),
            "kwargs": _nullable("object", description="The keyword arguments, when not the job's own."),
            "attempt": {
                "type": "integer",
                "minimum": 1,
                "description": "1 for a fire's first run; retries count on.",
            },
            "attempts": {
                "type": "integer",
                "minimum": 1,
                "description": "How often the fire may run: 1 + retries.",
            },
            "next_attempt_at": {
                **time,
                "description": "When the next attempt of this failed run starts; null: none is pending.",
            },
            "cancel_requested_at": time,
            "cancel_requested_by": {"type": "string"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "code", "field"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "description": "What is wrong, for people (may be translated)."},
                "code": {
                    "type": "string",
                    "description": "A stable identifier for programs, e.g. out_of_range.",
                },
                "field": _nullable("string", description="The input at fault, e.g. misfire_grace_time."),
            },
        },
        "Job": job,
        "Run": run,
        "JobDetail": {
            "allOf": [
                _ref("Job"),
                {
                    "type": "object",
                    "required": ["runs", "next_runs"],
                    "properties": {
                        "runs": {"type": "array", "items": _ref("Run")},
                        "next_runs": {"type": "array", "items": _ref("NextRun")},
                    },
                },
            ]
        },
        "NextRun": {
            "type": "object",
            "required": ["at", "utc", "moved_by_clock_change", "note"],
            "properties": {
                "at": {"type": "string", "format": "date-time", "description": "In the job's time zone."},
                "utc": {"type": "string", "format": "date-time"},
                "moved_by_clock_change": {"type": "boolean"},
                "note": _nullable("string", description="Why a clock change moved it, or a jitter cap."),
            },
        },
        "RunDetail": {
            "allOf": [
                _ref("Run"),
                {
                    "type": "object",
                    "required": ["job"],
                    "properties": {
                        "job": {"type": "string", "description": "The id of the job it is a run of."},
                        "output": {
                            "type": "string",
                            "description": (
                                "What the run logged and printed, capped (SCHEDULING_OUTPUT_LIMIT); "
                                "in the answer of GET only."
                            ),
                        },
                    },
                },
            ]
        },
        "CancelReply": {
            "allOf": [
                _ref("RunDetail"),
                {
                    "type": "object",
                    "required": ["result"],
                    "properties": {"result": {"type": "string", "enum": ["cancelled", "cancel requested"]}},
                },
            ]
        },
        "JobPage": _page("jobs", "Job"),
        "RunPage": _page("runs", "Run"),
        "RunRequested": {
            "type": "object",
            "required": ["job", "result"],
            "properties": {
                "job": {"type": "string"},
                "result": {"const": "run requested"},
                "warning": {"type": "string", "description": "Present when no scheduler is running."},
            },
        },
        "ActionReply": {
            "description": "The job as GET shows it, for a user with view_job; only its id otherwise.",
            "type": "object",
            "required": ["id", "result"],
            "properties": {**job["properties"], "result": {"enum": ["paused", "resumed", "rescheduled"]}},
        },
        "Status": {
            "type": "object",
            "required": [
                "alive",
                "host",
                "pid",
                "running_since",
                "last_beat",
                "standbys",
                "standby_reason",
                "changes",
                "jobs",
                "last_hour",
                "maintenance",
            ],
            "properties": {
                "alive": {"type": "boolean"},
                "host": _nullable("string"),
                "pid": _nullable("integer"),
                "running_since": time,
                "last_beat": time,
                "standbys": {"type": "integer"},
                "standby_reason": _nullable(
                    "string", description="Why a live scheduler could not start scheduling, if one could not."
                ),
                "changes": _nullable(
                    "string",
                    description="How the active scheduler learns of changes made elsewhere: "
                    "'pushed (LISTEN/NOTIFY)', or 'polled every … s (why)'.",
                ),
                "jobs": _counts("scheduled", "paused", "broken"),
                "last_hour": _counts("runs", "failures"),
                "maintenance": {"oneOf": [_ref("Maintenance"), {"type": "null"}]},
            },
        },
        "Maintenance": {
            "description": "A maintenance pause in force: no new runs start until it is lifted or `until`.",
            "type": "object",
            "required": ["reason", "by", "since", "until", "text"],
            "properties": {
                "reason": {"type": "string"},
                "by": {"type": "string", "description": "Who paused it."},
                "since": time,
                "until": _nullable("string", format="date-time", description="When it lifts itself."),
                "text": {"type": "string", "description": "The pause in words, as skipped runs record it."},
            },
        },
        "Calendar": {
            "description": "An exclusion calendar: the jobs naming it do not run inside its periods.",
            "type": "object",
            "required": ["name", "description", "timezone", "weekdays_only", "source", "jobs", "periods"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "timezone": _nullable(
                    "string", description="Where its days begin and end; null: the site's."
                ),
                "weekdays_only": {"type": "boolean", "description": "Saturdays and Sundays are excluded."},
                "source": {"type": "string", "enum": ["code", "admin"]},
                "jobs": {"type": "array", "items": {"type": "string"}, "description": "Jobs naming it."},
                "periods": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["day", "start", "end", "label"],
                        "properties": {
                            "day": _nullable("string", format="date", description="A whole day, or null."),
                            "start": time,
                            "end": _nullable(
                                "string", format="date-time", description="Not excluded itself."
                            ),
                            "label": {"type": "string"},
                        },
                    },
                },
            },
        },
        "CalendarList": {
            "type": "object",
            "required": ["calendars"],
            "properties": {"calendars": {"type": "array", "items": _ref("Calendar")}},
        },
        "MaintenanceState": {
            "type": "object",
            "required": ["maintenance"],
            "properties": {"maintenance": {"oneOf": [_ref("Maintenance"), {"type": "null"}]}},
        },
        "MaintenanceStart": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": validation.MAX_TEXT_LENGTH},
                "until": _nullable(
                    "string",
                    format="date-time",
                    description="In the future; without an offset, in the site's time zone.",
                ),
            },
        },
        "Reschedule": _reschedule(),
        "RunOptions": {
            "description": (
                "Options of this run. Arguments instead of the job's own: leave one out (or null) to keep "
                f"the job's. JSON only, each at most {validation.MAX_ARGUMENTS_BYTES} bytes, nested at most "
                f"{safejson.MAX_DEPTH} deep, integers of at most {safejson.MAX_INTEGER_DIGITS} digits."
            ),
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "args": _nullable("array", description="The positional arguments."),
                "kwargs": _nullable("object", description="The keyword arguments, by name."),
                "force": {
                    "type": "boolean",
                    "default": False,
                    "description": "Run even while the scheduler is paused for maintenance.",
                },
            },
        },
    }


def _page(key: str, item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "next"],
        "properties": {
            key: {"type": "array", "items": _ref(item)},
            "next": _nullable("string", description="The cursor of the next page; null on the last."),
        },
    }


def _counts(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(names),
        "properties": {name: {"type": "integer"} for name in names},
    }


def _reschedule() -> dict[str, Any]:
    seconds = {"type": "number", "minimum": 0}
    return {
        "description": (
            "Exactly one of cron, interval or date (timezone and jitter go with it), and/or job "
            f"options. The body is at most {api.MAX_BODY_BYTES} bytes, nested at most "
            f"{safejson.MAX_DEPTH} deep; NaN and Infinity are refused."
        ),
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "cron": {
                "description": "A 5-field crontab line, or an object of APScheduler cron fields.",
                "oneOf": [
                    {"type": "string", "maxLength": validation.MAX_CRONTAB_LENGTH},
                    {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
                ],
            },
            "interval": {
                "description": "Seconds, or an object of weeks/days/hours/minutes/seconds: 1 s to 10 years.",
                "oneOf": [
                    {
                        "type": "number",
                        "minimum": validation.MIN_INTERVAL,
                        "maximum": validation.MAX_INTERVAL,
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": dict.fromkeys(validation.UNIT_SECONDS, seconds),
                    },
                ],
            },
            "date": {"type": "string", "format": "date-time", "description": "A one-off run, in the future."},
            "timezone": {"type": "string", "maxLength": validation.MAX_TIMEZONE_LENGTH},
            "jitter": {"type": "integer", "minimum": 0, "maximum": validation.MAX_JITTER},
            "max_instances": {"type": "integer", "minimum": 1, "maximum": validation.MAX_INSTANCES},
            "coalesce": {"type": "boolean"},
            "misfire_grace_time": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": validation.MAX_MISFIRE_GRACE_TIME,
            },
            "timeout": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": validation.MAX_TIMEOUT,
                "description": "Seconds a run may take; null: no limit.",
            },
            "retries": {
                "type": "integer",
                "minimum": 0,
                "maximum": validation.MAX_RETRIES,
                "description": "Further attempts of a failed run (0: none).",
            },
            "retry_backoff": {
                "type": "integer",
                "minimum": 0,
                "maximum": validation.MAX_RETRY_BACKOFF,
                "description": "Seconds before the first retry; doubled for each next one, jittered.",
            },
            "retry_backoff_max": {
                "type": "integer",
                "minimum": 0,
                "maximum": validation.MAX_RETRY_BACKOFF_MAX,
                "description": "The longest wait between two attempts, in seconds.",
            },
            "retry_on": {
                "type": "array",
                "maxItems": validation.MAX_RETRY_ON,
                "items": {"type": "string", "minLength": 1, "maxLength": validation.MAX_TEXT_LENGTH},
                "description": (
                    "Dotted names of the exception classes that retry (builtins.ConnectionError, or "
                    "ConnectionError for a builtin), each a class of a module the server has loaded; "
                    "empty: any Exception."
                ),
            },
            "overlap": {
                "type": "string",
                "enum": ["skip", "queue", "replace"],
                "description": (
                    "What a fire that finds max_instances runs going does: skip it, queue it, or "
                    "replace the oldest run (cancelled; process pool and task workers only: 400 for "
                    "a job in threads)."
                ),
            },
            "calendars": {
                "type": ["array", "null"],
                "maxItems": validation.MAX_CALENDARS,
                "uniqueItems": True,
                "items": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": validation.MAX_CALENDAR_NAME_LENGTH,
                    "pattern": "\\S",
                },
                "description": (
                    "Names of existing exclusion calendars (400 names an unknown one); [] or null: none."
                ),
            },
            "lock": {
                "type": ["string", "null"],
                "maxLength": validation.MAX_LOCK_NAME_LENGTH,
                "description": (
                    "A lock shared with other jobs: jobs naming the same lock never run at the same "
                    "time; a fire finding it held follows overlap. Blank or null: no lock."
                ),
            },
            "alert": {
                "type": ["object", "null"],
                "description": (
                    "When the job's alerts are raised and where they go; null: the site's "
                    "(SCHEDULING_ALERTS); to: [] turns them off."
                ),
                "additionalProperties": False,
                "properties": {
                    "to": {
                        "type": "array",
                        "maxItems": validation.MAX_ALERT_DESTINATIONS,
                        "uniqueItems": True,
                        "items": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": validation.MAX_DESTINATION_LENGTH,
                            "description": "mail_admins, log, an e-mail address, a URL, slack:<url>.",
                        },
                    },
                    "on": {
                        "type": "array",
                        "uniqueItems": True,
                        "items": {"type": "string", "enum": list(ALERT_EVENTS)},
                    },
                    "after_failures": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": validation.MAX_AFTER_FAILURES,
                    },
                    "longer_than": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": validation.MAX_TIMEOUT,
                    },
                    "longer_than_usual": {
                        "type": ["number", "null"],
                        "minimum": validation.MIN_USUAL_FACTOR,
                        "maximum": validation.MAX_USUAL_FACTOR,
                        "description": "Times the median duration of the job's last successes.",
                    },
                    "no_success_within": {
                        "type": ["integer", "null"],
                        "minimum": validation.MIN_NO_SUCCESS_WITHIN,
                        "maximum": validation.MAX_NO_SUCCESS_WITHIN,
                    },
                },
            },
        },
    }
