"""The job store: django_apscheduler's ``DjangoJobStore``, made to keep what it cannot load.

The stock store deletes every job it cannot unpickle or import, and its history with it. Ours
flags such a job as broken (with the import error) and leaves it alone until the code returns.
Broken jobs are also left out of the due-job and next-run queries; otherwise their past
``next_run_time`` would make the scheduler wake up again and again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import check_callable_args, ref_to_obj
from django.db import transaction
from django.db.models import Count, Exists, F, JSONField, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob, DjangoJobExecution
from django_apscheduler.util import get_apscheduler_datetime, get_django_internal_datetime

from scheduling.calendars import CalendarRule, Period
from scheduling.fencing import Fence, FenceLost
from scheduling.models import Calendar, Execution, Maintenance, ScheduledJob
from scheduling.policy import DEFAULT, RunPolicy
from scheduling.schedules import ScheduleError, job_zone
from scheduling.sql import NewRows, insert_all, update_rows

if TYPE_CHECKING:
    from scheduling.declarations import Declaration

K = TypeVar("K")
V = TypeVar("V")

logger = logging.getLogger(__name__)

UPDATE_BATCH = 500  # jobs per UPDATE: 5 parameters each, well under SQLite's 32,766


def broken_job() -> Exists:
    """True for a stored job flagged as unloadable (usable in annotate/filter on DjangoJob)."""
    return Exists(ScheduledJob.objects.filter(id=OuterRef("id")).exclude(import_error=""))


def loadable_jobs() -> QuerySet[DjangoJob]:
    """Stored jobs not flagged as broken."""
    return DjangoJob.objects.filter(~broken_job())


def unpickle(job_state: bytes | memoryview) -> dict[str, Any]:
    return pickle.loads(job_state)  # noqa: S301 - the job store is pickled by design (django_apscheduler)


_NEW_STORE_ROW = NewRows(DjangoJob)


def state_digest(job_state: bytes | memoryview) -> str:
    """A digest of all a stored job's pickled state holds but its next run time; "" if it cannot tell.

    A job that only ran, or was paused or resumed, keeps its digest: APScheduler pickles the next
    run time last (``Job.__getstate__``), so the bytes before its key hold everything else. The
    frame header that pickle protocols 4 and up open with counts the whole length, next run time
    included (``None`` is shorter than a time), and is left out; its contents are not.

    The key must be found once, and last: pickle writes a string it has written already (the same
    object, say an id or argument "next_run_time", interned like the key) as a reference, so the
    text found could be a value, with other fields after it that the digest would leave out.
    """
    state = bytes(job_state)
    end = state.find(b"next_run_time")
    if end < 0 or state.find(b"next_run_time", end + 1) >= 0 or _LATER_KEYS.search(state, end):
        return ""
    start = 11 if state[2:3] == b"\x95" else 0  # PROTO, its version, FRAME and 8 bytes of length
    return hashlib.blake2b(state[start:end], digest_size=16).hexdigest()


# Job state keys pickled before the next run time's: none may follow the key found.
_LATER_KEYS = re.compile(rb"max_instances|coalesce|misfire_grace_time")


@functools.lru_cache(maxsize=1024)
def _check_arguments(func_ref: str, positional: int, keywords: frozenset[str]) -> None:
    """APScheduler's check that the function takes that many positional arguments and those keywords."""
    check_callable_args(ref_to_obj(func_ref), (None,) * positional, dict.fromkeys(keywords))


def old_executions(job_ids: Collection[str]) -> dict[str, int]:
    """How many rows django-apscheduler's own history table holds, by job id, for ``job_ids``.

    That table's foreign key cascades in Python and is enforced by the database, so a job row
    they point at can only go with them: such a job is kept (see docs/design.md).
    """
    rows = (
        DjangoJobExecution.objects.filter(job_id__in=list(job_ids))
        .values_list("job_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return dict(rows)


def policies_of(job_ids: Collection[str]) -> dict[str, RunPolicy]:
    """The run policies of ``job_ids`` (the default for a job without one), in one query."""
    stored = dict(
        ScheduledJob.objects.filter(id__in=list(job_ids))
        .exclude(run_policy={})
        .values_list("id", "run_policy")
    )
    return {job_id: RunPolicy.from_stored(stored.get(job_id)) for job_id in job_ids}


def earliest_retry() -> QuerySet[Execution, Any]:
    """The time of the earliest pending retry, as a one-row subquery (index on retry_at)."""
    return Execution.objects.awaiting_retry().order_by("retry_at").values("retry_at")[:1]


def pending_retries() -> dict[str, int]:
    """Pending retries by job id, in one query: each holds a max_instances slot of its job."""
    rows = Execution.objects.awaiting_retry().values_list("job_id").annotate(count=Count("pk")).order_by()
    return dict(rows)


def due_retries(now: datetime, limit: int) -> list[Execution]:
    """Up to ``limit`` failed runs whose next attempt is due at ``now``, the earliest first."""
    return list(
        Execution.objects.listed()
        .awaiting_retry()
        .filter(retry_at__lte=now)
        .order_by("retry_at", "pk")[:limit]
    )


def calendar_rules(names: Collection[str]) -> dict[str, CalendarRule]:
    """The calendars named that exist, with their periods, in one query (a LEFT JOIN)."""
    if not names:
        return {}
    rows = Calendar.objects.filter(name__in=list(names)).values_list(
        "name",
        "timezone",
        "weekdays_only",
        "periods__label",
        "periods__day",
        "periods__start",
        "periods__end",
    )
    found: dict[str, tuple[str, bool, list[Period]]] = {}
    for name, zone, weekdays_only, label, day, start, end in rows:
        periods = found.setdefault(name, (zone, weekdays_only, []))[2]
        if day is not None or start is not None:  # a calendar without periods joins one row of nulls
            periods.append(Period(label, day, start, end))
    return {
        name: CalendarRule(name, _calendar_zone(name, zone), weekdays_only, tuple(periods))
        for name, (zone, weekdays_only, periods) in found.items()
    }


def _calendar_zone(name: str, zone: str) -> tzinfo:
    try:
        return job_zone(zone or None)
    except ScheduleError:
        # Only a zone removed from the tz database since it was saved: its days are then the site's.
        logger.warning("Calendar %r: unknown time zone %r; using the site's", name, zone)
        return job_zone(None)


def flag_broken(job_id: str, error: BaseException, message: str = "") -> None:
    """Record that a stored job cannot be loaded (or run); log it the first time only.

    Cleared when the job loads again at a sync, or is edited, reset, paused or resumed.
    """
    message = message or f"{type(error).__name__}: {error}"
    scheduled_job, _ = ScheduledJob.objects.get_or_create(
        id=job_id, defaults={"source": ScheduledJob.Source.EXTERNAL}
    )
    if scheduled_job.import_error != message:
        logger.error("Job %s is kept but not run until it loads again or is edited: %s", job_id, message)
        scheduled_job.import_error = message
        scheduled_job.import_error_at = scheduled_job.import_error_at or timezone.now()
        scheduled_job.save(update_fields=["import_error", "import_error_at", "updated_at"])


CACHED_JOBS = 10_000  # jobs whose last read and last written state each cache of a store keeps


class Recent(OrderedDict[K, V]):
    """A dict that keeps the ``limit`` entries set last (setting one again makes it the newest).

    A store's caches serve the jobs due again soon; kept for every job, 100,000 jobs held 100,000
    unpickled jobs and their states in memory."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


class JobStore(DjangoJobStore):
    def __init__(self, pickle_protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        super().__init__(pickle_protocol=pickle_protocol)
        # The jobs this store last wrote, by id, with the state it wrote: a due job whose row holds
        # that state byte for byte is not unpickled again (unpickling, which imports the function
        # and rebuilds the trigger, was the costliest part of loading a thousand due jobs).
        self._written: Recent[str, tuple[bytes, Job]] = Recent(CACHED_JOBS)
        # What this store last read of each job's row (next run time, state): what moving the job
        # on after a fire compares against (a pass reads at most DISPATCH_BATCH + 1 rows: far
        # fewer than it keeps).
        self._read: Recent[str, tuple[datetime | None, bytes]] = Recent(CACHED_JOBS)
        # Whether a maintenance pause was in force when the last due query ran: read in that same
        # statement, so a pass costs no extra query for it (see Dispatcher.dispatch).
        self.paused_for_maintenance = False
        # The run policies of the jobs the last due query found, read in that same statement.
        self.policies: dict[str, RunPolicy] = {}
        # When the earliest pending retry is due (see scheduling.history.attempts), as the last
        # due query read it; None: no retry is pending.
        self.next_retry: datetime | None = None
        # How many jobs fall due together at the next run time after the due ones, as the last
        # due query counted it (the loop claims a crowd earlier: see runtime.loop._lead_before).
        self.next_crowd = 0

    def start(self, scheduler: Any, alias: str) -> None:
        # Skip DjangoResultStoreMixin.start: its listeners write django_apscheduler's history,
        # which scheduling's history replaces.
        BaseJobStore.start(self, scheduler, alias)

    # APScheduler's private API stays here, behind the three methods below, so the rest of the
    # package builds, loads and changes jobs without knowing which internals that takes.

    def new_job(self, *, next_run_time: datetime | None = None, **options: Any) -> Job:
        """A job bound to this store (and to its scheduler, once started), as a loaded one is.

        ``options`` are APScheduler's ``Job`` arguments. ``next_run_time`` is assigned, not
        passed: ``Job`` would convert it with its scheduler's time zone, and control functions
        run in processes that have no scheduler.
        """
        job = Job(self._scheduler, **options)
        job.next_run_time = next_run_time
        job._jobstore_alias = self._alias
        return job

    def declared_job(
        self, declaration: Declaration, trigger: BaseTrigger, next_run_time: datetime | None
    ) -> Job:
        """The job a checked declaration makes, bound to this store, built as a loaded one is.

        ``Job()`` inspects the function's signature for every job (a sixth of a first start with
        10,000 jobs); a declaration's arguments are checked against it once per function and
        shape of arguments instead, and its other values were checked when it was declared.

        :raises ValueError: the function does not take the declaration's arguments.
        :raises Exception: the function cannot be imported.
        """
        _check_arguments(declaration.func_ref, len(declaration.args), frozenset(declaration.kwargs))
        job = Job.__new__(Job)
        job.__setstate__(
            {
                "id": declaration.id,
                "func": declaration.func_ref,
                "trigger": trigger,
                "executor": declaration.executor,
                "args": tuple(declaration.args),
                "kwargs": dict(declaration.kwargs),
                "name": declaration.name,
                "misfire_grace_time": declaration.misfire_grace_time,
                "coalesce": declaration.coalesce,
                "max_instances": declaration.max_instances,
                "next_run_time": next_run_time,
            }
        )
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def load_row(self, job_state: bytes | memoryview) -> Job:
        """The job a row's pickled state holds, bound to this store.

        :raises Exception: whatever unpickling raises: it imports the job's function and
            trigger classes, so any error means "cannot load now".
        """
        return self._reconstitute_job(job_state)

    def modify_job(self, job: Job, **changes: Any) -> None:
        """Change a loaded job's attributes and store it, as APScheduler's ``modify_job`` does.

        APScheduler checks every change before applying any (a wrong type raises TypeError).
        Assign ``next_run_time`` on the job instead, for the reason ``new_job`` gives.

        :raises JobLookupError: when the job is no longer stored.
        """
        job._modify(**changes)
        self.update_job(job)

    def policy(self, job_id: str) -> RunPolicy:
        """A due job's run policy, as the last due query read it (the default for other jobs)."""
        return self.policies.get(job_id, DEFAULT)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._load(loadable_jobs().filter(next_run_time__lte=get_django_internal_datetime(now)))

    def get_next_run_time(self) -> datetime | None:
        """The earliest next run time, or a pending retry's time if that is earlier.

        The retry's is read in the same statement (an uncorrelated subquery) while any job has a
        next run time; only a store without one pays a second query for it.
        """
        found = (
            loadable_jobs()
            .filter(next_run_time__isnull=False)
            .annotate(retry=Subquery(earliest_retry()))
            .order_by("next_run_time")
            .values_list("next_run_time", "retry")
            .first()
        )
        if found is None:
            return earliest_retry().values_list("retry_at", flat=True).first()
        next_run_time = get_apscheduler_datetime(found[0], self._scheduler)
        return min(next_run_time, found[1]) if found[1] is not None else next_run_time

    def get_all_jobs(self) -> list[Job]:
        jobs = self._load(loadable_jobs())
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def get_due_jobs_and_next_run_time(self, now: datetime, limit: int) -> tuple[list[Job], datetime | None]:
        """Up to ``limit`` due jobs, and when the next job falls due after them, in one query.

        The next run time is ``now`` when more than ``limit`` jobs are due. The same statement
        sets ``paused_for_maintenance``, ``policies``, ``next_retry`` and ``next_crowd``.
        """
        internal_now = get_django_internal_datetime(now)
        following = loadable_jobs().filter(next_run_time__gt=internal_now).order_by("next_run_time")
        crowd = (
            loadable_jobs()
            .filter(next_run_time=Subquery(following.values("next_run_time")[:1]))
            .order_by()
            .values("next_run_time")
            .annotate(count=Count("id"))
            .values("count")
        )
        pause = Maintenance.objects.in_force(now).values("pk")[:1]
        policy = ScheduledJob.objects.filter(id=OuterRef("id")).values("run_policy")[:1]
        found = list(
            loadable_jobs()
            .filter(Q(next_run_time__lte=internal_now) | Q(id=Subquery(following.values("id")[:1])))
            .annotate(
                paused=Subquery(pause),  # uncorrelated: evaluated once per statement
                policy=Subquery(policy, output_field=JSONField()),
                retry=Subquery(earliest_retry()),  # uncorrelated too
                crowd=Subquery(crowd),  # uncorrelated too: an index range at one moment
            )
            .order_by("next_run_time", "id")
            .values_list("id", "next_run_time", "job_state", "paused", "policy", "retry", "crowd")[
                : limit + 1
            ]
        )
        self.paused_for_maintenance = any(row[3] is not None for row in found)
        self.policies = {row[0]: RunPolicy.from_stored(row[4]) for row in found if row[4]}
        self.next_retry = (
            found[0][5] if found else earliest_retry().values_list("retry_at", flat=True).first()
        )
        self.next_crowd = (found[0][6] or 0) if found else 0
        rows = [(job_id, moment, state) for job_id, moment, state, *_ in found]
        due = [(job_id, moment, state) for job_id, moment, state in rows if moment <= internal_now]
        later = [moment for _, moment, _ in rows if moment > internal_now]
        if len(due) > limit:
            return self._load_written(due[:limit]), now
        next_run_time = get_apscheduler_datetime(later[0], self._scheduler) if later else None
        return self._load_written(due), next_run_time

    def _load_written(self, rows: list[tuple[str, datetime, bytes]]) -> list[Job]:
        """Load rows, reusing the jobs this store wrote when the rows still hold what it wrote.

        The job in memory must also still have the row's next run time: the dispatcher moves it
        on before writing, and a write that failed leaves the row behind.
        """
        known, unknown = {}, []
        for job_id, moment, state in rows:
            self._read[job_id] = (moment, bytes(state))
        for job_id, moment, state in rows:
            written = self._written.get(job_id)
            if (
                written is not None
                and written[0] == state
                and get_django_internal_datetime(written[1].next_run_time) == moment
            ):
                known[job_id] = written[1]
            else:
                unknown.append((job_id, state))
        loaded = {job.id: job for job in self._load_rows(unknown)}
        # In the rows' order (next run time, id), as the dispatcher expects.
        return [job for job_id, _, _ in rows if (job := known.get(job_id) or loaded.get(job_id)) is not None]

    def add_jobs(self, jobs: list[Job]) -> list[DjangoJob]:
        """Store many new jobs in one statement (per few thousand jobs); returns the rows written."""
        rows = [self.row(job) for job in jobs]
        insert_all(rows)
        return rows

    def update_jobs(self, jobs: list[Job]) -> list[DjangoJob]:
        """Store the new state of many jobs, in one UPDATE per UPDATE_BATCH jobs; returns the rows."""
        fields = ["next_run_time", "job_state"]
        for job in jobs:  # until written, their rows are not what this store knows
            self._written.pop(job.id, None)
        written: list[DjangoJob] = []
        for start in range(0, len(jobs), UPDATE_BATCH):
            batch = jobs[start : start + UPDATE_BATCH]
            rows = [self.row(job) for job in batch]
            update_rows(
                DjangoJob, [(row.id, {name: getattr(row, name) for name in fields}) for row in rows], fields
            )
            for job, row in zip(batch, rows, strict=True):
                self._written[job.id] = (row.job_state, job)
            written += rows
        return written

    def advance_jobs(self, jobs: list[Job], fence: Fence | None = None) -> list[str]:
        """Store the next run time of due jobs, compare-and-set against what the due query read.

        A row changed since (an operator paused, rescheduled or edited the job) is left as the
        operator left it, and the next pass loads it afresh; the writes are also fenced by the
        lease. Returns the ids of the jobs left alone.

        :raises FenceLost: when nothing was written because the lease is no longer ours.
        """
        fields, compare = ["next_run_time", "job_state"], ["next_run_time", "job_state"]
        condition, params = fence.sql() if fence is not None else ("1 = 1", [])
        lost: list[str] = []
        for job in jobs:
            self._written.pop(job.id, None)
        for start in range(0, len(jobs), UPDATE_BATCH // 2):  # twice the values per job
            batch = jobs[start : start + UPDATE_BATCH // 2]
            rows = [self.row(job) for job in batch]
            values = []
            for row in rows:
                moment, state = self._read[row.id]
                values.append(
                    (
                        row.id,
                        {
                            "next_run_time": row.next_run_time,
                            "job_state": row.job_state,
                            "next_run_time__was": moment,
                            "job_state__was": state,
                        },
                    )
                )
            updated = update_rows(DjangoJob, values, fields, f"AND {condition}", params, compare=compare)
            if updated == len(rows):
                changed: set[str] = set()
            elif not updated and fence is not None and not fence.holds():
                raise FenceLost(fence, f"move {len(rows)} job(s) to their next run time")
            else:
                changed = self._changed_since(rows)
            for job, row in zip(batch, rows, strict=True):
                if job.id in changed:
                    lost.append(job.id)
                    logger.info(
                        "Job %s was changed while its fire was dispatched; keeping that change", job.id
                    )
                else:
                    self._written[job.id] = (row.job_state, job)
        return lost

    def remove_fired(self, job: Job, fence: Fence | None = None) -> bool:
        """Remove a job that has no fire left, unless changed since the due query read it.

        A one-off job an operator rescheduled meanwhile stays, with its new date.

        :raises FenceLost: when the lease is no longer ours.
        """
        self._written.pop(job.id, None)
        moment, state = self._read[job.id]
        with transaction.atomic():
            rows = DjangoJob.objects.select_for_update().filter(
                id=job.id, next_run_time=moment, job_state=state
            )
            if fence is not None:
                rows = rows.filter(fence.exists())
            ids = list(rows.values_list("pk", flat=True))
            if ids and (old := old_executions(ids)):
                # As in remove_job: deleting it would delete django-apscheduler's history of it.
                logger.warning(
                    "Job %s is kept, paused, not removed: django-apscheduler's history table has %d run(s)",
                    job.id,
                    old[job.id],
                )
                removed = DjangoJob.objects.filter(pk__in=ids).update(next_run_time=None)
            else:
                _, by_model = DjangoJob.objects.filter(pk__in=ids).delete()
                removed = by_model.get(DjangoJob._meta.label, 0)
        if removed:
            return True
        if fence is not None and not fence.holds():
            raise FenceLost(fence, f"remove the finished job {job.id}")
        logger.info("Job %s was changed after its last fire was dispatched; keeping it", job.id)
        return False

    def _changed_since(self, rows: list[DjangoJob]) -> set[str]:
        """The ids among ``rows`` whose stored row does not hold what was just written."""
        written = {row.id: (row.next_run_time, bytes(row.job_state)) for row in rows}
        stored = DjangoJob.objects.filter(id__in=written).values_list("id", "next_run_time", "job_state")
        same = {job_id for job_id, moment, state in stored if written[job_id] == (moment, bytes(state))}
        return set(written) - same

    def row(self, job: Job) -> DjangoJob:
        return _NEW_STORE_ROW(
            id=job.id,
            next_run_time=get_django_internal_datetime(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )

    def remove_job(self, job_id: str) -> None:
        self._written.pop(job_id, None)
        if old := old_executions([job_id]):
            # A one-off job that has fired, say: it has no next run, so keeping it paused changes
            # nothing but the table, where deleting it would delete django-apscheduler's history.
            logger.warning(
                "Job %s is kept, paused, not removed: django-apscheduler's history table has %d run(s) "
                "of it, which removing the job would delete",
                job_id,
                old[job_id],
            )
            if not DjangoJob.objects.filter(id=job_id).update(next_run_time=None):
                raise JobLookupError(job_id)
            return
        super().remove_job(job_id)

    def get_first_jobs(self, limit: int) -> list[Job]:
        """The ``limit`` jobs due soonest, then paused ones."""
        rows = (
            loadable_jobs()
            .order_by(F("next_run_time").asc(nulls_last=True), "id")
            .values_list("id", "job_state")
        )
        return self._load_rows(rows[:limit])

    def get_jobs_by_id(self, job_ids: Collection[str]) -> list[Job]:
        return self._load(loadable_jobs().filter(id__in=job_ids))

    def update_job(self, job: Job) -> None:
        # One UPDATE instead of the stock SELECT ... FOR UPDATE + UPDATE: the row count tells
        # whether the job still exists.
        updated = DjangoJob.objects.filter(id=job.id).update(
            next_run_time=get_django_internal_datetime(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )
        if not updated:
            raise JobLookupError(job.id)

    def _get_jobs(self, **filters: Any) -> list[Job]:
        # Every caller is overridden above; this keeps the stock deleting version unreachable.
        return self._load(DjangoJob.objects.filter(Q(**filters)))

    def _load(self, rows: QuerySet[DjangoJob]) -> list[Job]:
        return self._load_rows(rows.order_by("next_run_time", "id").values_list("id", "job_state"))

    def _load_rows(self, rows: Iterable[tuple[str, bytes]]) -> list[Job]:
        jobs, errors = self.peek_rows(rows)
        for job_id, exc in errors.items():
            flag_broken(job_id, exc)
        return jobs

    def peek_rows(self, rows: Iterable[tuple[str, bytes]]) -> tuple[list[Job], dict[str, BaseException]]:
        """Load rows without writing anything: the jobs, and why each of the others cannot be
        loaded now. For the read-only surfaces (a GET never writes); the scheduler flags them.
        """
        jobs: list[Job] = []
        errors: dict[str, BaseException] = {}
        for job_id, job_state in rows:
            try:
                job = self.load_row(job_state)
                # The column and the pickled state are written together, so the state says both.
                self._read[job_id] = (get_django_internal_datetime(job.next_run_time), bytes(job_state))
                jobs.append(job)
            # Unpickling imports the job's function and trigger classes: any error means
            # "cannot load now", never "delete".
            except Exception as exc:
                errors[job_id] = exc
        return jobs, errors
