"""Every stored job and exclusion calendar as a schedules document (see ``document``).

Nothing in it depends on when it was written (no next run time, no export date), so two
exports of the same state are identical and an export can be kept in review and diffed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from apscheduler.job import Job
from django_apscheduler.models import DjangoJob

from scheduling import declarations
from scheduling.models import Calendar, ScheduledJob
from scheduling.policy import RunPolicy
from scheduling.schedules import ScheduleError, spec_of
from scheduling.store import JobStore, policies_of
from scheduling.transfer.document import VERSION


def export_document() -> dict[str, Any]:
    return {"version": VERSION, "jobs": job_entries(), "calendars": calendar_entries()}


def job_entries() -> list[dict[str, Any]]:
    """Each stored job, by id. One that cannot be loaded now is kept with its error, flagged."""
    rows = DjangoJob.objects.order_by("id").values_list("id", "job_state")
    jobs, errors = JobStore().peek_rows(rows)  # reads only: an export never flags a job broken
    scheduled = {
        row.id: row for row in ScheduledJob.objects.filter(id__in=[job.id for job in jobs] + [*errors])
    }
    policies = policies_of([job.id for job in jobs])
    entries = [job_entry(job, scheduled.get(job.id), policies[job.id]) for job in jobs]
    for job_id, error in errors.items():
        row = scheduled.get(job_id)
        entries.append(
            {
                "id": job_id,
                "function": row.func_ref if row else "",
                "declared": False,
                "error": f"{type(error).__name__}: {error}",
            }
        )
    return sorted(entries, key=lambda entry: entry["id"])


def job_entry(job: Job, scheduled: ScheduledJob | None, policy: RunPolicy) -> dict[str, Any]:
    function = job.func_ref
    entry: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "function": function,
        "declared": function in declarations.schedulables,
        "source": scheduled.source if scheduled else ScheduledJob.Source.EXTERNAL.value,
        "overridden": bool(scheduled and scheduled.overridden_at),
        "paused": job.next_run_time is None,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        "options": options_of(job, policy),
    }
    try:
        entry["schedule"] = spec_of(job.trigger)
    except ScheduleError as exc:  # a trigger of APScheduler's own kind, added by other code
        entry["declared"] = False
        entry["error"] = str(exc)
    return entry


def options_of(job: Job, policy: RunPolicy) -> dict[str, Any]:
    """Every option, defaults included: a file says all it means, whatever the site's defaults."""
    values = {
        name: list(value) if isinstance(value, tuple) else value for name, value in asdict(policy).items()
    }
    values["alert"] = None if policy.alert is None else policy.alert.stored()
    return {
        "max_instances": job.max_instances,
        "coalesce": job.coalesce,
        "misfire_grace_time": job.misfire_grace_time,
        "executor": job.executor,
        **values,
    }


def calendar_entries() -> list[dict[str, Any]]:
    return [
        {
            "name": calendar.name,
            "description": calendar.description,
            "timezone": calendar.timezone,
            "weekdays_only": calendar.weekdays_only,
            "source": calendar.source,
            "periods": [
                {
                    "day": period.day.isoformat() if period.day else None,
                    "start": period.start.isoformat() if period.start else None,
                    "end": period.end.isoformat() if period.end else None,
                    "label": period.label,
                }
                for period in calendar.periods.all()
            ],
        }
        for calendar in Calendar.objects.prefetch_related("periods").order_by("name")
    ]
