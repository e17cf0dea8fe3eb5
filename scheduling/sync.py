"""Reconcile the jobs declared in code with the job store, at scheduler start.

Rules, in the order a job meets them:

* New in the code, or its declaration changed since the last sync: the code wins; the job is
  written to the store (a job paused by an operator stays paused).
* Declaration unchanged but the stored job differs from what the last sync wrote: someone
  changed it outside the code (admin, shell). The change is kept and flagged as an override
  until the job is reset to its declaration.
* Stored, declared by an earlier deploy, no longer in the code: paused and flagged, never deleted.
  If the declaration comes back unchanged, the job resumes.
* Stored but cannot be loaded (its function was renamed or removed): flagged with the error,
  kept, and cleared as soon as it loads again.
* Declared, unchanged, but no longer stored (an operator deleted it, or a one-off job ran):
  left alone, so a deploy does not bring back what an operator removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from apscheduler.job import Job
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling.calendars import CalendarDeclaration
from scheduling.declarations import Declaration, JobDeclarationError
from scheduling.models import Calendar, CalendarPeriod, ScheduledJob
from scheduling.schedules import build_trigger
from scheduling.sql import NewRows, insert_all, update_rows
from scheduling.store import UPDATE_BATCH, JobStore, flag_broken, state_digest

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What the sync did, in words: "2 added, 1 no longer declared"."""
        labels = {
            "added": "added",
            "updated": "updated",
            "overridden": "overridden outside the code",
            "undeclared": "no longer declared (paused)",
            "broken": "broken (kept)",
            "repaired": "loadable again",
        }
        return ", ".join(
            f"{len(getattr(self, key))} {label}" for key, label in labels.items() if getattr(self, key)
        )


def job_fingerprint(job: Job) -> str:
    """Changes whenever what a stored job runs, or when, changes."""
    state = {
        "func": job.func_ref,
        "trigger": repr(job.trigger),
        "args": repr(job.args),
        "kwargs": repr(sorted(job.kwargs.items())),
        "name": job.name,
        "max_instances": job.max_instances,
        "coalesce": job.coalesce,
        "misfire_grace_time": job.misfire_grace_time,
        "executor": job.executor,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def build_job(declaration: Declaration, store: JobStore, now: datetime, paused: bool = False) -> Job:
    trigger = build_trigger(declaration.schedule)
    return store.declared_job(declaration, trigger, None if paused else trigger.get_next_fire_time(None, now))


def sync(
    store: JobStore,
    declarations: Iterable[Declaration],
    now: datetime | None = None,
    keep: Callable[[], None] = lambda: None,
) -> SyncReport:
    """Bring the store in line with the declarations; ``keep`` is called every few thousand jobs
    (the scheduler renews its lease there: a first sync of 100,000 jobs outlasts it)."""
    now = now or timezone.now()
    report = SyncReport()
    # Read as named tuples of the columns sync looks at, not as model instances: building 100,000
    # instances of each model was a fifth of a restart (the JSON columns, never read here, a tenth).
    rows: dict[str, StoredRow] = {row.id: row for row in stored_rows()}
    scheduled_jobs: dict[str, Synced] = {
        synced.id: synced for synced in ScheduledJob.objects.values_list(*SYNCED_STATE, named=True)
    }
    declared = {declaration.id: declaration for declaration in declarations}
    to_write: list[tuple[Declaration, bool, bool]] = []
    checked: dict[str, tuple[str, str]] = {}
    for number, declaration in enumerate(declared.values(), 1):
        change = _sync_declared(
            store,
            declaration,
            scheduled_jobs.get(declaration.id),
            rows.get(declaration.id),
            now,
            report,
            checked,
        )
        if change is not None:
            to_write.append(change)
        if number % SYNC_BATCH == 0:
            keep()
    _note_digests(checked)
    # Written together: a first start with thousands of declared jobs takes a few statements.
    for start in range(0, len(to_write), SYNC_BATCH):
        apply_declarations(store, to_write[start : start + SYNC_BATCH], now)
        keep()
    for job_id, row in rows.items():
        if job_id not in declared:
            _sync_undeclared(store, scheduled_jobs.get(job_id), row, now, report)
    gone = [
        scheduled_job.id
        for scheduled_job in scheduled_jobs.values()
        if scheduled_job.source == ScheduledJob.Source.CODE
        and scheduled_job.id not in declared
        and scheduled_job.id not in rows
    ]
    ScheduledJob.objects.filter(id__in=gone, undeclared_at__isnull=True).update(undeclared_at=now)
    return report


def stored_rows() -> QuerySet[DjangoJob, StoredRow]:
    """The job store's rows as sync reads them. Whether paused, not the next run time itself:
    converting 100,000 of them to aware datetimes was a third of reading the store."""
    paused = ExpressionWrapper(Q(next_run_time=None), output_field=BooleanField())
    return DjangoJob.objects.annotate(paused=paused).values_list("id", "paused", "job_state", named=True)


SYNC_BATCH = 5000  # declarations looked at, or written, between two calls of sync's ``keep``


class StoredRow(Protocol):
    """A row of the job store as sync reads it."""

    id: str
    paused: bool  # no next run time
    job_state: bytes


class Synced(Protocol):
    """What the last sync wrote about a job, as sync reads it (a ScheduledJob, or its columns)."""

    id: str
    source: str
    func_ref: str
    declared_fingerprint: str
    stored_fingerprint: str
    state_digest: str
    overridden_at: datetime | None
    undeclared_at: datetime | None
    paused_by_sync: bool
    import_error: str


SYNCED_STATE = list(Synced.__annotations__)  # the columns read: the names above


def _sync_declared(
    store: JobStore,
    declaration: Declaration,
    scheduled_job: Synced | None,
    row: StoredRow | None,
    now: datetime,
    report: SyncReport,
    checked: dict[str, tuple[str, str]],
) -> tuple[Declaration, bool, bool] | None:
    """Bring one declared job in line; returns (declaration, stored, paused) if it must be written.

    A stored state found as the last sync left it, but under another digest (the first restart
    after an upgrade), goes into ``checked`` as id: (digest, stored fingerprint), to be noted.
    """
    if (
        scheduled_job is None
        or scheduled_job.source != ScheduledJob.Source.CODE
        or scheduled_job.declared_fingerprint != declaration.fingerprint
    ):
        keep_paused = row is not None and row.paused and not (scheduled_job and scheduled_job.paused_by_sync)
        (report.updated if row is not None else report.added).append(declaration.id)
        return declaration, row is not None, keep_paused
    if row is None:
        return None
    digest = state_digest(row.job_state)
    if (
        digest
        and digest == scheduled_job.state_digest
        and not (scheduled_job.undeclared_at or scheduled_job.overridden_at or scheduled_job.import_error)
    ):
        # Byte for byte what the last sync wrote or checked, but for the next run time: neither
        # changed outside the code nor unloadable (it loaded then, and its declaration is unchanged).
        # Unpickling and fingerprinting each job made most of a restart with 100,000 of them.
        return None
    job = _load(store, row, scheduled_job, report)
    if job is None:
        return None
    changes: dict[str, Any] = {}
    if scheduled_job.undeclared_at:
        changes["undeclared_at"] = None
        if scheduled_job.paused_by_sync:
            changes["paused_by_sync"] = False
            job.next_run_time = job.trigger.get_next_fire_time(None, now)
            store.update_job(job)
            logger.info("Job %s is declared again and resumes", job.id)
    fingerprint = job_fingerprint(job)
    unnoted = bool(digest) and digest != scheduled_job.state_digest
    if unnoted and fingerprint == scheduled_job.stored_fingerprint and not scheduled_job.overridden_at:
        checked[scheduled_job.id] = (digest, fingerprint)
    if fingerprint != scheduled_job.stored_fingerprint and not scheduled_job.overridden_at:
        changes["overridden_at"] = now
        report.overridden.append(job.id)
        logger.info("Job %s was changed outside the code; keeping that change until it is reset", job.id)
    if changes:
        ScheduledJob.objects.filter(id=scheduled_job.id).update(**changes)
    return None


def _note_digests(checked: dict[str, tuple[str, str]]) -> None:
    """Note the digests of stored states found unchanged, for the next restart to skip them.

    Compared and set on the stored fingerprint: a reset to the declaration written meanwhile
    (from the admin) has noted a digest of its own, which this one must not replace.
    """
    noted = [
        (job_id, {"state_digest": digest, "stored_fingerprint__was": fingerprint})
        for job_id, (digest, fingerprint) in checked.items()
    ]
    for start in range(0, len(noted), UPDATE_BATCH):
        update_rows(
            ScheduledJob,
            noted[start : start + UPDATE_BATCH],
            ["state_digest"],
            compare=["stored_fingerprint"],
        )


def _sync_undeclared(
    store: JobStore, scheduled_job: Synced | None, row: StoredRow, now: datetime, report: SyncReport
) -> None:
    if scheduled_job is None:
        scheduled_job = ScheduledJob.objects.create(id=row.id, source=ScheduledJob.Source.EXTERNAL)
    job = _load(store, row, scheduled_job, report)
    if job is not None and not scheduled_job.func_ref:
        ScheduledJob.objects.filter(id=scheduled_job.id).update(func_ref=job.func_ref, name=job.name)
    if scheduled_job.source != ScheduledJob.Source.CODE or scheduled_job.undeclared_at:
        return
    paused_now = False
    if job is not None and job.next_run_time is not None:
        job.next_run_time = None
        store.update_job(job)
        paused_now = True
    ScheduledJob.objects.filter(id=scheduled_job.id).update(undeclared_at=now, paused_by_sync=paused_now)
    report.undeclared.append(row.id)
    logger.warning("Job %s is no longer declared in the code: paused and kept, not deleted", row.id)


def _load(store: JobStore, row: StoredRow, scheduled_job: Synced, report: SyncReport) -> Job | None:
    try:
        job = store.load_row(row.job_state)
    # Unpickling imports the job's function: any error means the code cannot run it now.
    except Exception as exc:
        flag_broken(row.id, exc)
        report.broken.append(row.id)
        return None
    if scheduled_job.import_error:
        ScheduledJob.objects.filter(id=scheduled_job.id).update(import_error="", import_error_at=None)
        report.repaired.append(row.id)
        logger.info("Job %s can be loaded again and resumes", row.id)
    return job


def apply_declaration(
    store: JobStore, declaration: Declaration, exists: bool, now: datetime, paused: bool = False
) -> Job:
    """Write the code's declaration of a job to the store and remember it as synced."""
    return apply_declarations(store, [(declaration, exists, paused)], now)[0]


def apply_declarations(
    store: JobStore, changes: list[tuple[Declaration, bool, bool]], now: datetime
) -> list[Job]:
    """Write declarations, each as (declaration, already stored, paused), in a few statements."""
    jobs = [build_job(declaration, store, now, paused=paused) for declaration, _, paused in changes]
    rows = store.add_jobs([job for job, (_, exists, _) in zip(jobs, changes, strict=True) if not exists])
    rows += store.update_jobs([job for job, (_, exists, _) in zip(jobs, changes, strict=True) if exists])
    digests = {row.id: state_digest(row.job_state) for row in rows}
    insert_all(
        [
            _NEW_SYNCED(
                id=declaration.id,
                source=ScheduledJob.Source.CODE,
                func_ref=declaration.func_ref,
                name=declaration.name,
                declaration=declaration.as_dict(),
                run_policy=declaration.policy,
                declared_fingerprint=declaration.fingerprint,
                stored_fingerprint=job_fingerprint(job),
                state_digest=digests[job.id],
                overridden_at=None,
                undeclared_at=None,
                paused_by_sync=False,
                import_error="",
                import_error_at=None,
            )
            for job, (declaration, _, _) in zip(jobs, changes, strict=True)
        ],
        conflicts=SYNCED_FIELDS,
    )
    return jobs


_NEW_SYNCED = NewRows(ScheduledJob)
SYNCED_FIELDS = [
    "source",
    "func_ref",
    "name",
    "declaration",
    "run_policy",
    "declared_fingerprint",
    "stored_fingerprint",
    "state_digest",
    "overridden_at",
    "undeclared_at",
    "paused_by_sync",
    "import_error",
    "import_error_at",
    "updated_at",
]


def sync_calendars(calendars: Iterable[CalendarDeclaration], jobs: Iterable[Declaration]) -> None:
    """Write the calendars declared in code to the database, at scheduler start, before the jobs.

    The code wins: a calendar of that name takes the declaration's contents (one made in the
    admin under that name becomes the code's). A code calendar the code no longer declares is
    kept, as if made in the admin, so the jobs naming it keep their exclusions; it is logged.

    :raises JobDeclarationError: a declared job names a calendar that exists nowhere.
    """
    declared = {declaration.name: declaration for declaration in calendars}
    with transaction.atomic():
        for declaration in declared.values():
            row, _ = Calendar.objects.update_or_create(
                name=declaration.name,
                defaults={
                    "description": declaration.description,
                    "timezone": declaration.timezone,
                    "weekdays_only": declaration.weekdays_only,
                    "source": Calendar.Source.CODE,
                },
            )
            row.periods.all().delete()
            CalendarPeriod.objects.bulk_create(
                CalendarPeriod(calendar=row, label=item.label, day=item.day, start=item.start, end=item.end)
                for item in declaration.periods
            )
        gone = Calendar.objects.filter(source=Calendar.Source.CODE).exclude(name__in=list(declared))
        for name in gone.values_list("name", flat=True):
            logger.warning("Calendar %r is no longer declared in code: kept, now editable in the admin", name)
        gone.update(source=Calendar.Source.ADMIN)
    known = set(Calendar.objects.values_list("name", flat=True))
    for job in jobs:
        unknown = [name for name in job.policy.get("calendars", ()) if name not in known]
        if unknown:
            raise JobDeclarationError(
                f"Job {job.id!r} names calendar {unknown[0]!r}, which is neither declared in code "
                "(scheduling.calendar) nor made in the admin"
            )
