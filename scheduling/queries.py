"""What the scheduler is doing, read from the database: heartbeat, job counts, recent runs."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.job import Job
from django.db import connections
from django.db.models import Count, Func, IntegerField, Q, QuerySet, Subquery
from django.utils import timezone, translation
from django_apscheduler.models import DjangoJob

from scheduling.calendars import Period
from scheduling.models import (
    Calendar,
    Execution,
    Maintenance,
    ScheduledJob,
    SchedulerInstance,
    maintenance_in_force,
)
from scheduling.placement import Placement, RunsIn
from scheduling.policy import AlertPolicy, RunPolicy, shown_destination
from scheduling.schedules import describe
from scheduling.store import JobStore, policies_of


@dataclass(frozen=True)
class SchedulerStatus:
    instance: SchedulerInstance | None
    standbys: int
    scheduled: int
    paused: int
    broken: int
    runs_last_hour: int
    failures_last_hour: int
    now: datetime
    # Why a live scheduler holds no lease although it tried (empty when none failed to start).
    standby_reason: str = ""
    # The maintenance pause in force, if one is: no new runs start meanwhile.
    maintenance: Maintenance | None = None

    @property
    def alive(self) -> bool:
        return self.instance is not None


def scheduler_status() -> SchedulerStatus:
    """Four queries (schedulers, jobs, last hour's runs, the maintenance pause), whatever the
    number of jobs and executions."""
    now = timezone.now()
    alive = list(SchedulerInstance.objects.alive().order_by("-last_beat"))
    active = [instance for instance in alive if instance.role == SchedulerInstance.Role.ACTIVE]
    # Every job counted as scheduled or paused, less the broken ones of each, counted apart among
    # the few flagged: an Exists for each of 100,000 jobs took 0.3 s of every admin page on MariaDB.
    broken = DjangoJob.objects.filter(id__in=ScheduledJob.objects.exclude(import_error="").values("id"))
    jobs = DjangoJob.objects.aggregate(
        every=Count("id"),
        scheduled=Count("id", filter=Q(next_run_time__isnull=False))
        - _count(broken.filter(next_run_time__isnull=False)),
        paused=Count("id", filter=Q(next_run_time__isnull=True))
        - _count(broken.filter(next_run_time__isnull=True)),
    )
    runs = (
        Execution.objects.filter(scheduled_at__gte=now - timedelta(hours=1))
        .completed()
        .aggregate(runs=Count("id"), failures=Count("id", filter=Q(status=Execution.Status.FAILED)))
    )
    return SchedulerStatus(
        instance=active[0] if active else None,
        standbys=len(alive) - len(active),
        scheduled=jobs["scheduled"],
        paused=jobs["paused"],
        broken=jobs["every"] - jobs["scheduled"] - jobs["paused"],
        runs_last_hour=runs["runs"],
        failures_last_hour=runs["failures"],
        now=now,
        standby_reason=next((instance.standby_reason for instance in alive if instance.standby_reason), ""),
        maintenance=maintenance_in_force(now),
    )


def _count(rows: QuerySet[Any]) -> Subquery:
    """``rows``' number, as a subquery to use inside another statement."""
    return Subquery(
        rows.order_by()
        .annotate(number=Func("id", function="COUNT", output_field=IntegerField()))
        .values("number")
    )


@dataclass(frozen=True)
class JobSummary:
    id: str
    name: str
    function: str
    schedule: str
    next_run: datetime | None
    state: str
    timeout: int | None = None
    calendars: tuple[str, ...] = ()
    lock: str | None = None
    alert: dict[str, Any] | None = None  # the job's own alerts as stored; None: the site's


def job_summaries(job_ids: Collection[str] | None = None, limit: int | None = None) -> list[JobSummary]:
    """Stored jobs (all, the first ``limit``, or those of ``job_ids``) with schedule in words,
    next run and state. Broken jobs come last.
    """
    scheduled_jobs_query = ScheduledJob.objects.all()
    store = JobStore()
    if limit is not None:
        jobs = store.get_first_jobs(limit)
        scheduled_jobs_query = scheduled_jobs_query.filter(id__in=[job.id for job in jobs])
    elif job_ids is None:
        jobs = store.get_all_jobs()
    else:
        scheduled_jobs_query = scheduled_jobs_query.filter(id__in=job_ids)
        jobs = store.get_jobs_by_id(job_ids)
    scheduled_jobs = scheduled_jobs_query.in_bulk()
    summaries = []
    for job in jobs:
        summaries.append(_summary(job, scheduled_jobs.pop(job.id, None)))
    for scheduled_job in scheduled_jobs.values():
        if scheduled_job.import_error:
            summaries.append(
                JobSummary(
                    scheduled_job.id,
                    scheduled_job.name,
                    scheduled_job.func_ref,
                    "-",
                    None,
                    f"broken: {scheduled_job.import_error}",
                )
            )
    return summaries


def _summary(job: Job, scheduled_job: ScheduledJob | None) -> JobSummary:
    state = "scheduled" if job.next_run_time else "paused"
    if scheduled_job and scheduled_job.undeclared_at:
        state = "paused: no longer declared in code"
    elif scheduled_job and scheduled_job.overridden_at:
        state += ", overridden outside the code"
    policy = RunPolicy.from_stored(scheduled_job.run_policy if scheduled_job else None)
    return JobSummary(
        job.id,
        job.name,
        job.func_ref,
        describe(job.trigger),
        job.next_run_time,
        state,
        policy.timeout,
        policy.calendars,
        policy.lock,
        policy.alert.stored() if policy.alert is not None else None,
    )


def job_summary(job_id: str) -> JobSummary | None:
    """One job, read without writing (a job that cannot be loaded is shown broken, not flagged)."""
    return next(iter(read_summaries([job_id])), None)


def job_page(limit: int, after: str = "") -> tuple[list[JobSummary], str | None]:
    """Up to ``limit`` jobs in id order after the id ``after``, and the id to continue after when
    more follow. Three queries, whatever the page size; nothing is written.
    """
    # The database orders and compares the ids, so pages follow its collation with no gap.
    stored = DjangoJob.objects.filter(id__gt=after).order_by().values_list("id", flat=True)
    broken = (
        ScheduledJob.objects.filter(id__gt=after)
        .exclude(import_error="")
        .order_by()
        .values_list("id", flat=True)
    )
    if connections[stored.db].features.supports_slicing_ordering_in_compound:
        # Each side stops at a page: unbounded, MariaDB gathered every id of both tables and sorted
        # them for each page (1 s with 100,000 jobs). SQLite allows no LIMIT there, nor needs it.
        stored, broken = stored.order_by("id")[: limit + 1], broken.order_by("id")[: limit + 1]
    ids = list(stored.union(broken).order_by("id")[: limit + 1])
    page = read_summaries(ids[:limit])
    return page, (ids[limit - 1] if len(ids) > limit else None)


def read_summaries(job_ids: list[str]) -> list[JobSummary]:
    """The summaries of ``job_ids``, in that order, read without writing to the database."""
    scheduled_jobs = ScheduledJob.objects.filter(id__in=job_ids).in_bulk()
    rows = [
        (job_id, state)
        for job_id, state in DjangoJob.objects.filter(id__in=job_ids).values_list("id", "job_state")
        if not (job_id in scheduled_jobs and scheduled_jobs[job_id].import_error)
    ]
    jobs, errors = JobStore().peek_rows(rows)
    loaded = {job.id: job for job in jobs}
    summaries = []
    for job_id in job_ids:
        scheduled_job = scheduled_jobs.get(job_id)
        if job_id in loaded:
            summaries.append(_summary(loaded[job_id], scheduled_job))
        elif scheduled_job and scheduled_job.import_error:
            summaries.append(
                JobSummary(
                    job_id,
                    scheduled_job.name,
                    scheduled_job.func_ref,
                    "-",
                    None,
                    f"broken: {scheduled_job.import_error}",
                )
            )
        elif job_id in errors:
            error = f"{type(errors[job_id]).__name__}: {errors[job_id]}"
            name, func_ref = (scheduled_job.name, scheduled_job.func_ref) if scheduled_job else (job_id, "")
            summaries.append(JobSummary(job_id, name, func_ref, "-", None, f"broken: {error}"))
    return summaries


def schedule_summary(job_id: str) -> str:
    """A stored job's schedule and options in words, for the history of changes (LogEntry)."""
    job = JobStore().lookup_job(job_id)
    grace = "none" if job.misfire_grace_time is None else f"{job.misfire_grace_time} s"
    placement = Placement.of(job.executor)
    where = "" if placement.runs_in == RunsIn.THREADS else f", runs in {placement.describe()}"
    policy = policies_of([job_id])[job_id]
    limit = "" if policy.timeout is None else f", timeout {policy.timeout} s"
    limit += retry_summary(policy)
    if policy.calendars:
        limit += ", calendars " + ", ".join(f'"{name}"' for name in policy.calendars)
    if policy.overlap != "skip":
        limit += f", overlap {policy.overlap}"
    if policy.lock is not None:
        limit += f', lock "{policy.lock}"'
    if policy.alert is not None:
        limit += f", alerts {alert_summary(policy.alert)}"
    with translation.override(None):  # the history keeps one language: its messages are stored text
        schedule = describe(job.trigger)
    return (
        f"{schedule}; max instances {job.max_instances}, "
        f"coalesce {'on' if job.coalesce else 'off'}, misfire grace {grace}{limit}{where}"
    )


def alert_summary(alert: AlertPolicy) -> str:
    """ "on failure (3 in a row), no success within 26 h, to mail_admins, log", or "off"."""
    if not alert.to:
        return "off"
    rules = [
        f"{event} ({alert.after_failures} in a row)"
        if event == "failure" and alert.after_failures > 1
        else event
        for event in alert.on
    ]
    if alert.longer_than is not None:
        rules.append(f"runs longer than {alert.longer_than} s")
    if alert.longer_than_usual is not None:
        rules.append(f"runs longer than {alert.longer_than_usual:g} times usual")
    if alert.no_success_within is not None:
        rules.append(f"no success within {alert.no_success_within / 3600:g} h")
    return f"on {', '.join(rules) or 'nothing'}, to {', '.join(map(shown_destination, alert.to))}"


def retry_summary(policy: RunPolicy) -> str:
    """ ", retries 3 (backoff 30 s, at most 3600 s, on builtins.ConnectionError)", or nothing."""
    if not policy.retries:
        return ""
    on = f", on {', '.join(policy.retry_on)}" if policy.retry_on else ""
    return (
        f", retries {policy.retries} (backoff {policy.retry_backoff} s, "
        f"at most {policy.retry_backoff_max} s{on})"
    )


def jobs_naming(names: Iterable[str]) -> dict[str, list[str]]:
    """The ids of the jobs that name each of ``names`` among their calendars, in one query.

    The names are in a JSON column, and not every database can search inside one (SQLite and
    MariaDB have no JSON containment), so the jobs with a run policy are read and looked into.
    """
    wanted = set(names)
    found: dict[str, list[str]] = {name: [] for name in wanted}
    rows = ScheduledJob.objects.exclude(run_policy={}).order_by("id").values_list("id", "run_policy")
    for job_id, stored in rows:
        for name in RunPolicy.from_stored(stored).calendars:
            if name in wanted:
                found[name].append(job_id)
    return found


@dataclass(frozen=True)
class CalendarSummary:
    name: str
    description: str
    timezone: str  # blank: the site's
    weekdays_only: bool
    source: str
    periods: tuple[Period, ...]
    jobs: tuple[str, ...]  # the ids of the jobs that name it


def calendar_summaries(name: str | None = None) -> list[CalendarSummary]:
    """Every calendar (or the one named), with its periods and its jobs, in three queries."""
    found = Calendar.objects.prefetch_related("periods")
    if name is not None:
        found = found.filter(name=name)
    rows = list(found)
    naming = jobs_naming(row.name for row in rows)
    return [
        CalendarSummary(
            row.name,
            row.description,
            row.timezone,
            row.weekdays_only,
            row.source,
            tuple(Period(item.label, item.day, item.start, item.end) for item in row.periods.all()),
            tuple(naming[row.name]),
        )
        for row in rows
    ]
