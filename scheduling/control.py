"""Changing jobs from any process (admin, shell, scripts) by writing to the job store.

Nothing here runs a job or talks to the scheduler: the running scheduler notices changes to the
store within ``SCHEDULING_POLL_INTERVAL``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.util import ref_to_obj
from django.db import router, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_apscheduler.models import DjangoJob

from scheduling import calendars, declarations, validation
from scheduling.conf import settings
from scheduling.models import (
    UNFINISHED,
    Calendar,
    CalendarPeriod,
    Execution,
    Maintenance,
    RunRequest,
    ScheduledJob,
    maintenance_in_force,
)
from scheduling.placement import DEFAULT_ALIAS, Placement
from scheduling.policy import POLICY_NAMES, RunPolicy
from scheduling.schedules import build_trigger
from scheduling.store import JobStore, old_executions, policies_of, unpickle
from scheduling.sync import apply_declaration


class UnknownJobError(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(_("No stored job with id %(job)r") % {"job": job_id})
        self.job_id = job_id


class JobLoadError(RuntimeError):
    """A stored job that cannot be loaded now (its function was renamed or removed in a deploy)."""

    def __init__(self, job_id: str, error: BaseException, what: str = "") -> None:
        what = what or _("Job %(job)r cannot be loaded") % {"job": job_id}
        super().__init__(f"{what}: {type(error).__name__}: {error}")
        self.job_id = job_id


class OldHistoryError(RuntimeError):
    """A job django-apscheduler's own history table still refers to, which deleting would empty."""

    def __init__(self, job_id: str, count: int) -> None:
        super().__init__(
            _(
                "Job %(job)r is not deleted: django-apscheduler's history table (DjangoJobExecution) has "
                "%(count)d run(s) of it, which deleting the job would delete with it; they are copied into "
                "this history as imported runs, so once you no longer need them there, delete them "
                "(DjangoJobExecution.objects.filter(job_id=%(job)r).delete()) and then the job"
            )
            % {"job": job_id, "count": count}
        )
        self.job_id = job_id


class MaintenanceError(RuntimeError):
    """A run asked for while the scheduler is paused for maintenance, without ``force``."""

    def __init__(self, job_id: str, pause: Maintenance) -> None:
        super().__init__(
            _("Job %(job)r is not run: the scheduler is %(pause)s; force the run to start it anyway")
            % {"job": job_id, "pause": pause.describe()}
        )
        self.job_id = job_id
        self.pause = pause


class UnknownRunError(LookupError):
    def __init__(self, run_id: int) -> None:
        super().__init__(_("No run with id %(run)s") % {"run": run_id})
        self.run_id = run_id


class RunEndedError(RuntimeError):
    """A cancel asked for a run that has ended already."""

    def __init__(self, run: Execution) -> None:
        super().__init__(
            _("Run %(run)s of job %(job)r has ended already (%(status)s)")
            % {"run": run.pk, "job": run.job_id, "status": run.get_status_display()}
        )
        self.run = run


def _store() -> JobStore:
    return JobStore()


def _lookup(store: JobStore, job_id: str) -> Job:
    try:
        job = store.lookup_job(job_id)
    # Loading imports the job's function: any error means it cannot be loaded now.
    except Exception as exc:
        raise JobLoadError(job_id, exc) from exc
    if job is None:
        raise UnknownJobError(job_id)
    return job


def load(job_id: str) -> Job:
    """A stored job, or UnknownJobError / JobLoadError saying why it cannot be had."""
    return _lookup(_store(), job_id)


def run_now(
    job_id: str, requested_by: str = "", args: Any = None, kwargs: Any = None, force: bool = False
) -> RunRequest:
    """Ask the running scheduler to run a job now; returns at once.

    The run is recorded as started manually by ``requested_by``. ``args`` (a list) and
    ``kwargs`` (a dict), when given, replace the job's own for this run only: they are checked
    against its function's signature (InputError names the parameter) and recorded on the run;
    a value equal to the job's own is recorded as the job's (None).

    :raises JobLoadError: when arguments are given and the job's function cannot be imported.
    :raises MaintenanceError: while the scheduler is paused for maintenance, unless ``force``.
    """
    state = DjangoJob.objects.filter(id=job_id).values_list("job_state", flat=True).first()
    if state is None:
        raise UnknownJobError(job_id)
    if args is not None or kwargs is not None:
        args, kwargs = _run_arguments(job_id, state, args, kwargs)
    if not force and (pause := maintenance_in_force()) is not None:
        raise MaintenanceError(job_id, pause)
    return RunRequest.objects.create(
        job_id=job_id, requested_by=requested_by, args=args, kwargs=kwargs, force=force
    )


def run_now_message(request: RunRequest) -> str:
    """What the admin's history records for a run now: whether it has arguments of its own, and
    whether it was forced during a maintenance pause."""
    own = [name for name in ("args", "kwargs") if getattr(request, name) is not None]
    message = f"Requested a run now with its own {' and '.join(own)}" if own else "Requested a run now"
    return f"{message}, forced during maintenance" if request.force else message


def _run_arguments(job_id: str, state: bytes, args: Any, kwargs: Any) -> tuple[Any, Any]:
    try:
        job = unpickle(state)  # the state only: its function is imported below, to name it
    # A state that cannot be read at all: the store flags such jobs broken.
    except Exception as exc:
        raise JobLoadError(job_id, exc) from exc
    try:
        function = ref_to_obj(job["func"])
    # Importing runs the module's code: whatever it raises means the function is not there now.
    except Exception as exc:
        raise JobLoadError(
            job_id,
            exc,
            _(
                "Job %(job)r: its function %(function)s cannot be imported, "
                "so arguments for it cannot be checked"
            )
            % {"job": job_id, "function": job["func"]},
        ) from exc
    args, kwargs = validation.run_arguments(function, args, kwargs, job["args"], job["kwargs"])
    same_args = args is not None and args == list(job["args"])
    same_kwargs = kwargs is not None and kwargs == dict(job["kwargs"])
    return None if same_args else args, None if same_kwargs else kwargs


def cancel(run_id: int, by: str = "") -> Execution:
    """Cancel the run ``run_id``; returns its row as it now stands.

    A run still waiting for a task worker, or queued behind a run still going (overlap policy),
    ends here, cancelled. A running one is stopped by the
    process running it, within a second or so: the scheduler ends its child process (process
    pool, and task workers for a job with a timeout), a run in threads (or a task worker
    without a timeout) is told through ``current_run().cancel_requested``. Either way it is
    recorded *cancelled, by* ``by`` when it ends. Cancelling a run that a cancel ended returns it
    as it stands.

    :raises UnknownRunError: no such run.
    :raises RunEndedError: the run has ended already, other than by a cancel.
    """
    by = validation.text("by", by, validation.MAX_USER_LENGTH)
    now = timezone.now()
    runs = Execution.objects.filter(pk=run_id)
    runs.enqueued().update(
        status=Execution.Status.CANCELLED,
        finished_at=now,
        exception=f"Cancelled by {by or 'a script'} before a task worker took it",
        cancel_requested_at=now,
        cancel_requested_by=by,
    )
    runs.filter(status=Execution.Status.QUEUED).update(
        status=Execution.Status.CANCELLED,
        retry_at=None,
        finished_at=now,
        exception=f"Cancelled by {by or 'a script'} while it was queued behind a run still going",
        cancel_requested_at=now,
        cancel_requested_by=by,
    )
    runs.running().filter(cancel_requested_at__isnull=True).update(
        cancel_requested_at=now, cancel_requested_by=by
    )
    run = runs.first()
    if run is None:
        raise UnknownRunError(run_id)
    # Judged by the row as re-read, not by what the UPDATEs did: a run that ended meanwhile is
    # ended (not "cancel requested"), and cancelling a run a cancel ended, again, answers as
    # the first time did.
    if run.status in UNFINISHED or (run.status == Execution.Status.CANCELLED and run.cancel_requested_at):
        return run
    raise RunEndedError(run)


def maintenance() -> Maintenance | None:
    """The maintenance pause in force now, or None (one that reached its ``until`` is over)."""
    return maintenance_in_force()


def start_maintenance(reason: str, by: str = "", until: datetime | str | None = None) -> Maintenance:
    """Pause every scheduler on this database for maintenance, until ``off`` or ``until``.

    No new run starts meanwhile; runs going on finish. Setting it again replaces the reason,
    who and until (and keeps ``since`` of a pause still in force).
    """
    now = timezone.now()
    reason, end = validation.maintenance_window(reason, until, now)
    validation.text("by", by, validation.MAX_USER_LENGTH)
    current = maintenance_in_force(now)
    since = current.since if current else now
    pause, _ = Maintenance.objects.update_or_create(
        pk=Maintenance.SINGLETON,
        defaults={"on": True, "reason": reason, "by": by, "since": since, "until": end},
    )
    return pause


def end_maintenance() -> bool:
    """Lift the maintenance pause; False if none was in force."""
    was_on = maintenance_in_force() is not None
    Maintenance.objects.filter(pk=Maintenance.SINGLETON).update(on=False)
    return was_on


def pause(job_id: str) -> None:
    store = _store()
    job = _lookup(store, job_id)
    job.next_run_time = None
    store.update_job(job)
    _clear_broken(job_id)


def resume(job_id: str) -> None:
    store = _store()
    job = _lookup(store, job_id)
    job.next_run_time = job.trigger.get_next_fire_time(None, timezone.now())
    store.update_job(job)
    _clear_broken(job_id)


def _clear_broken(job_id: str) -> None:
    """A job that loaded and was written again is given another chance (see dispatch's flag)."""
    ScheduledJob.objects.filter(id=job_id).exclude(import_error="").update(
        import_error="", import_error_at=None
    )


def reschedule(job_id: str, **schedule: Any) -> None:
    """Give a job a new schedule (cron=, interval= or date=, with timezone=, jitter=).

    A job declared in code keeps this change across restarts, flagged as overridden, until it
    is reset to its declaration.
    """
    spec = validation.schedule(
        **{("timezone_name" if key == "timezone" else key): value for key, value in schedule.items()}
    )
    change(job_id, schedule=spec)


def change(job_id: str, *, schedule: dict[str, Any] | None = None, **options: Any) -> None:
    """Change a job's schedule (a spec, see scheduling.schedules) and options in one write.

    ``options`` are APScheduler job options: max_instances, coalesce, misfire_grace_time, and
    executor (where it runs: a ``scheduling.placement.Placement``'s alias); and the run
    policy's (timeout, calendars, retries, retry_backoff, retry_backoff_max, retry_on,
    overlap, lock; see scheduling.policy). Both are checked against
    ``scheduling.validation``'s limits before the job is read: InputError names the field.
    """
    options = validation.options(options)
    check_calendars(options.get("calendars", ()))
    policy = {name: options.pop(name) for name in POLICY_NAMES if name in options}
    if schedule is not None:
        validation.check_spec(schedule)
    store = _store()
    job = _lookup(store, job_id)
    current = policies_of([job_id])[job_id]
    runs_in = Placement.of(options.get("executor", job.executor)).runs_in
    validation.check_overlap_placement(policy.get("overlap") or current.overlap, runs_in)
    validation.check_task_timeout(policy.get("timeout", current.timeout), runs_in, settings.TASK_TIMEOUT)
    if policy:
        _change_policy(job_id, policy)
    changes: dict[str, Any] = dict(options)
    if schedule is not None:
        trigger = changes["trigger"] = build_trigger(schedule)
        if job.next_run_time is not None:  # a paused job stays paused
            job.next_run_time = trigger.get_next_fire_time(None, timezone.now())
    store.modify_job(job, **changes)
    _clear_broken(job_id)
    ScheduledJob.objects.filter(id=job_id, source=ScheduledJob.Source.CODE).update(
        overridden_at=timezone.now()
    )


def mark_overridden(job_id: str, overridden: bool) -> None:
    """Flag a job declared in code as changed outside the code, or clear the flag (an import
    does, to match the file). A flag set keeps its date; one cleared on a job that differs from
    its declaration is set again by the scheduler's next start (see ``sync``)."""
    declared = ScheduledJob.objects.filter(id=job_id, source=ScheduledJob.Source.CODE)
    if overridden:
        declared.filter(overridden_at__isnull=True).update(overridden_at=timezone.now())
    else:
        declared.update(overridden_at=None)


def _change_policy(job_id: str, changes: dict[str, Any]) -> None:
    # Read and written under the row's lock: two edits of different options at once both stand.
    with transaction.atomic(using=router.db_for_write(ScheduledJob)):
        scheduled_job, _ = ScheduledJob.objects.select_for_update().get_or_create(
            id=job_id, defaults={"source": ScheduledJob.Source.EXTERNAL}
        )
        policy = replace(RunPolicy.from_stored(scheduled_job.run_policy), **changes)
        ScheduledJob.objects.filter(id=job_id).update(run_policy=policy.stored())


def add(
    job_id: str,
    func_ref: str,
    *,
    schedule: dict[str, Any],
    name: str = "",
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Add a job outside the code (from the admin or a script); it is never paused by a deploy."""
    validation.job_id(job_id)
    validation.text("name", name)
    validation.check_storable("args", list(args))
    validation.check_storable("kwargs", kwargs or {})
    # Bound here, naming the parameter: APScheduler's own check says only "ValueError".
    validation.run_arguments(_function(job_id, func_ref), None, None, args, kwargs)
    options = validation.options(options)
    check_calendars(options.get("calendars", ()))
    policy = RunPolicy(**{name: options.pop(name) for name in POLICY_NAMES if name in options})
    runs_in = Placement.of(options.get("executor", DEFAULT_ALIAS)).runs_in
    validation.check_overlap_placement(policy.overlap, runs_in)
    validation.check_task_timeout(policy.timeout, runs_in, settings.TASK_TIMEOUT)
    validation.check_spec(schedule)
    trigger = build_trigger(schedule)
    store = _store()
    job = store.new_job(
        id=job_id,
        func=func_ref,
        trigger=trigger,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        name=name or job_id,
        next_run_time=trigger.get_next_fire_time(None, timezone.now()),
        **{"executor": DEFAULT_ALIAS, **settings.JOB_DEFAULTS, **options},
    )
    store.add_job(job)
    ScheduledJob.objects.update_or_create(
        id=job_id,
        defaults={
            "source": ScheduledJob.Source.EXTERNAL,
            "func_ref": func_ref,
            "name": job.name,
            "run_policy": policy.stored(),
        },
    )


def _function(job_id: str, func_ref: str) -> Any:
    try:
        return ref_to_obj(func_ref)
    # Importing runs the module's code: whatever it raises means the function is not there now.
    except Exception as exc:
        raise JobLoadError(
            job_id, exc, f"Job {job_id!r}: its function {func_ref} cannot be imported"
        ) from exc


def reset(job_id: str) -> None:
    """Put a job declared in code back to its declaration (schedule and options)."""
    declaration = declarations.registry.get(job_id)
    if declaration is None:
        raise UnknownJobError(job_id)
    store = _store()
    existing = store.lookup_job(job_id)
    paused = existing is not None and existing.next_run_time is None
    apply_declaration(store, declaration, existing is not None, timezone.now(), paused=paused)


def delete(job_id: str) -> None:
    """Remove a job from the store; its history stays.

    :raises OldHistoryError: when django-apscheduler's history table refers to the job.
    """
    if old := old_executions([job_id]):
        raise OldHistoryError(job_id, old[job_id])
    try:
        _store().remove_job(job_id)
    except JobLookupError:
        raise UnknownJobError(job_id) from None


def calendar_names() -> list[str]:
    """Every calendar a job may name, sorted: those declared in code and those in the database."""
    return sorted(set(calendars.registry) | set(Calendar.objects.values_list("name", flat=True)))


def check_calendars(names: Iterable[str]) -> None:
    """Refuse calendar names that are neither declared in code nor in the database (InputError)."""
    names = list(names)
    known = set(calendar_names()) if names else set()
    if unknown := [name for name in names if name not in known]:
        raise validation.InputError(
            "calendars",
            "unknown_calendar",
            _("calendars: there is no calendar named %(names)s (declare it in code or add it in the admin)")
            % {"names": ", ".join(f'"{name}"' for name in unknown)},
        )


def save_calendar(
    name: str,
    *,
    description: str = "",
    timezone_name: str = "",
    weekdays_only: bool = False,
    source: str = Calendar.Source.ADMIN,
    periods: Iterable[dict[str, Any]] = (),
) -> Calendar:
    """Create or replace a calendar and its excluded periods (each a dict of day, or start and
    end, with an optional label), checked by the same rules as ``scheduling.calendar()``."""
    name = validation.calendar_name("name", name)
    description = validation.text("description", description)
    zone = calendars.check_zone(timezone_name)
    weekdays_only = validation.flag("weekdays_only", weekdays_only)
    if source not in Calendar.Source.values:
        raise validation.InputError(
            "source",
            "invalid_choice",
            _("source must be one of %(known)s, not %(value)s")
            % {"known": ", ".join(Calendar.Source.values), "value": validation.shown(source)},
        )
    periods = list(periods)
    if len(periods) > calendars.MAX_PERIODS:
        raise validation.InputError(
            "periods",
            "out_of_range",
            _("periods: at most %(max)s per calendar, not %(count)s")
            % {"max": calendars.MAX_PERIODS, "count": len(periods)},
        )
    checked = [
        calendars.Period(
            validation.text("label", period.get("label", ""), calendars.MAX_LABEL_LENGTH).strip(),
            *validation.calendar_period(period.get("day"), period.get("start"), period.get("end"), zone),
        )
        for period in periods
    ]
    with transaction.atomic(using=router.db_for_write(Calendar)):
        row, _created = Calendar.objects.update_or_create(
            name=name,
            defaults={
                "description": description,
                "timezone": timezone_name or "",
                "weekdays_only": weekdays_only,
                "source": source,
            },
        )
        row.periods.all().delete()
        CalendarPeriod.objects.bulk_create(
            CalendarPeriod(calendar=row, label=item.label, day=item.day, start=item.start, end=item.end)
            for item in checked
        )
    return row


def delete_calendar(name: str) -> None:
    """Remove a calendar made outside the code; refused while a job names it (InputError)."""
    if users := _jobs_naming(name):
        raise validation.InputError(
            "calendars",
            "calendar_in_use",
            _("calendar %(name)s is not deleted: %(jobs)s name it")
            % {"name": validation.shown(name), "jobs": ", ".join(users)},
        )
    Calendar.objects.filter(name=name).delete()


def _jobs_naming(name: str) -> list[str]:
    # Read in Python: the policy is a JSON column, and JSON lookups differ on each database.
    stored = ScheduledJob.objects.filter(id__in=DjangoJob.objects.values("id")).values_list(
        "id", "run_policy"
    )
    return sorted(job_id for job_id, policy in stored if name in RunPolicy.from_stored(policy).calendars)
