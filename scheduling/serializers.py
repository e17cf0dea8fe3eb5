"""Jobs, runs and the scheduler status as JSON-able dicts: one shape for the CLI and the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduling.models import Execution, Maintenance
from scheduling.policy import shown_destination
from scheduling.preview import stored_job_runs
from scheduling.queries import CalendarSummary, JobSummary, SchedulerStatus


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def job_data(job: JobSummary) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "function": job.function,
        "schedule": job.schedule,
        "next_run": iso(job.next_run),
        "state": job.state,
        "timeout": job.timeout,
        "calendars": list(job.calendars),
        "lock": job.lock,
        "alert": job.alert and {**job.alert, "to": [shown_destination(to) for to in job.alert["to"]]},
    }


def calendar_data(calendar: CalendarSummary) -> dict[str, Any]:
    """A calendar: periods are a whole ``day`` (ISO date) or ``start``/``end`` (ISO instants)."""
    return {
        "name": calendar.name,
        "description": calendar.description,
        "timezone": calendar.timezone or None,
        "weekdays_only": calendar.weekdays_only,
        "source": calendar.source,
        "jobs": list(calendar.jobs),
        "periods": [
            {
                "day": period.day.isoformat() if period.day else None,
                "start": iso(period.start),
                "end": iso(period.end),
                "label": period.label,
            }
            for period in calendar.periods
        ],
    }


def next_runs_data(job_id: str, count: int) -> list[dict[str, Any]]:
    """A stored job's next runs: at (job's zone, with offset), utc, moved_by_clock_change, note."""
    return [run.as_dict() for run in stored_job_runs(job_id, count)]


def run_data(run: Execution) -> dict[str, Any]:
    return {
        "id": run.pk,
        "scheduled_at": iso(run.scheduled_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "status": run.status,
        "duration": run.duration,
        "origin": run.origin,
        "requested_by": run.requested_by,
        "ran_in": run.ran_in,
        "host": run.hostname,
        "task_id": run.task_id,
        "exception": run.exception,
        "args": run.args,
        "kwargs": run.kwargs,
        "attempt": run.attempt,
        "attempts": run.attempts,
        "next_attempt_at": iso(run.retry_at),
        "cancel_requested_at": iso(run.cancel_requested_at),
        "cancel_requested_by": run.cancel_requested_by,
    }


def status_data(status: SchedulerStatus) -> dict[str, Any]:
    instance = status.instance
    return {
        "alive": status.alive,
        "host": instance.hostname if instance else None,
        "pid": instance.pid if instance else None,
        "running_since": iso(instance.started_at) if instance else None,
        "last_beat": iso(instance.last_beat) if instance else None,
        "standbys": status.standbys,
        "standby_reason": status.standby_reason or None,
        "changes": (instance.changes or None) if instance else None,
        "jobs": {"scheduled": status.scheduled, "paused": status.paused, "broken": status.broken},
        "last_hour": {"runs": status.runs_last_hour, "failures": status.failures_last_hour},
        "maintenance": maintenance_data(status.maintenance),
    }


def maintenance_data(pause: Maintenance | None) -> dict[str, Any] | None:
    """The maintenance pause in force, or None when the scheduler is not paused."""
    if pause is None:
        return None
    return {
        "reason": pause.reason,
        "by": pause.by,
        "since": iso(pause.since),
        "until": iso(pause.until),
        "text": pause.describe(),
    }
