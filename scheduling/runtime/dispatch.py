"""Turning due jobs into runs, in batches: what stock APScheduler does one job at a time.

Stock APScheduler, per due job and in the scheduler thread: a SELECT ... FOR UPDATE and an UPDATE
of the job, then history writes from event listeners. With hundreds of jobs due together that
is thousands of round trips, and punctuality collapses. Here, for all the jobs due at one
moment: one INSERT of their history rows (running, missed, skipped) — so every run is on disk
before it starts —, then the hand-over to the thread pool, then one UPDATE of their store rows.

Both writes are fenced by the lease (scheduling.fencing) and the UPDATE is a compare-and-set
against what the due query read, so a stale leader changes nothing and an operator's change
made meanwhile stands. One job whose fire times cannot be computed (a trigger that raises or
goes backwards, an absurd option) is flagged broken and recorded once; the rest of the pass
goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.job import Job
from django.db import DatabaseError, router, transaction
from django.db.models import F
from django.utils import timezone

from scheduling import signals
from scheduling.calendars import CalendarRule, exclusion
from scheduling.fencing import Fence, FenceLost
from scheduling.history import locks
from scheduling.history.locks import Holder, LockTaken
from scheduling.history.recorder import Recorder
from scheduling.history.rows import SCHEDULED, Origin, describe_exception, missed_message
from scheduling.models import Execution, ExecutionQuerySet, maintenance_in_force
from scheduling.placement import Placement, RunsIn
from scheduling.policy import RunPolicy
from scheduling.runs.base import RunTarget
from scheduling.runs.observers import dispatching
from scheduling.signals import notify
from scheduling.store import JobStore, calendar_rules, due_retries, flag_broken, pending_retries, policies_of

logger = logging.getLogger(__name__)

MAX_ROWS_PER_JOB = 1000  # history rows one job writes in one pass; older fires share one row
MAX_FIRE_TIMES = 10_000  # fire times computed for one job in one pass, so no trigger hangs the loop
RETRIES_PER_PASS = 100  # due retries started per pass; more wait for the next
BUSY = "Skipped: the previous run was still going (max_instances reached)"
RETRY_PENDING = "Skipped: a retry of an earlier run was pending (max_instances reached)"
QUEUED_AHEAD = (
    "Skipped: a queued fire or a pending retry was already waiting for the run still going (overlap policy)"
)


class ScheduleError(Exception):
    """A job's fire times cannot be computed: it is flagged broken, the others go on."""


@dataclass
class _Plan:
    job: Job
    target: RunTarget
    last_fire: datetime | None = None
    next_run_time: datetime | None = None  # set when the job skips ahead instead of moving on
    rows: list[Execution] = field(default_factory=list)
    reserved: bool = False
    lock: tuple[str, Execution] | None = None  # the lock its run takes, and that run's row
    busy: list[Execution] = field(default_factory=list)  # fires skipped: a run going, a lock held


class Dispatcher:
    def __init__(self, store: JobStore, recorder: Recorder, targets: Mapping[RunsIn, RunTarget]) -> None:
        self.store = store
        self.recorder = recorder
        self.targets = targets  # by placement kind: where the runs of a job happen
        # Pending retries by job, read once a pass when the due query saw any: each holds a slot.
        self._pending: dict[str, int] = {}
        # The locks the pass's jobs name that are held, read once a pass when any job names one;
        # a lock a run of this pass takes is added.
        self._held: dict[str, Holder] = {}
        # The earliest fire of the last pass's window (fire-ahead) left to its time, unclaimed.
        self.left: datetime | None = None

    def target(self, job: Job) -> RunTarget:
        return self.targets[Placement.of(job.executor).runs_in]

    def dispatch(self, jobs: list[Job], now: datetime, ahead: datetime | None = None) -> datetime | None:
        """Record and start the runs of ``jobs``, due at ``now``; returns their next run time.

        All in one hand-over: recording them a hundred at a time, so the first start sooner, was
        measured to cost a third of the throughput (see docs/design.md). Traced as one span (when
        OpenTelemetry is on), the parent of the runs' spans wherever they run.

        With ``ahead`` (fire-ahead), a job not due yet whose next fire comes by then is claimed
        now when that fire would start (see :meth:`_plan_ahead`): recorded running without a
        start, and held by its target until its time. ``left`` is then the earliest fire by
        ``ahead`` that was not claimed: it is looked at again at its time, as without fire-ahead.

        :raises FenceLost: the lease is no longer ours; nothing of this pass was written.
        """
        self.left = None
        with dispatching("scheduling.dispatch", {"scheduling.jobs": len(jobs)}):
            return self._dispatch(jobs, now, ahead)

    def _dispatch(self, jobs: list[Job], now: datetime, ahead: datetime | None = None) -> datetime | None:
        fence = self.recorder.fence  # one epoch for the whole pass
        by_target: dict[int, list[Job]] = {id(target): [] for target in self.targets.values()}
        for job in jobs:
            by_target[id(self.target(job))].append(job)
        for target in self.targets.values():
            target.count_busy(by_target[id(target)])
        self._pending = pending_retries() if self.store.next_retry is not None else {}
        names = {lock for job in jobs if (lock := self.store.policy(job.id).lock) is not None}
        self._held = locks.holders(names)
        # The due query said whether a maintenance pause is on: only then is the pause read.
        pause = maintenance_in_force(now) if self.store.paused_for_maintenance else None
        skip = pause.skip_message if pause is not None else None
        rules = self._calendars(jobs)
        plans: list[_Plan] = []
        try:
            for job in jobs:
                if (plan := self._plan_contained(job, now, skip, rules, ahead)) is not None:
                    plans.append(plan)
            unstarted = self._hand_over(plans, fence)
        except BaseException:
            # Nothing started: the slots reserved for this pass must not stay taken.
            for plan in plans:
                if plan.reserved:
                    plan.target.release(plan.job)
            raise
        if skip is not None:
            skipped = sum(row.status == Execution.Status.SKIPPED for plan in plans for row in plan.rows)
            logger.info("Paused for maintenance: %d fire(s) due now recorded skipped", skipped)
        if unstarted:
            # Their rows stay "running" until Runner.stop records them as interrupted.
            logger.info("The scheduler is stopping: %d run(s) due now were not started", unstarted)
        return self._advance(plans, now, fence)

    def run_requested(
        self,
        job: Job,
        requested_at: datetime,
        origin: Origin,
        take: Callable[[], bool],
        skip: str | None = None,
        policy: RunPolicy | None = None,
        waiting: int = 0,
    ) -> None:
        """Run ``job`` now, as requested at ``requested_at``: record the run (fenced), then
        ``take`` the request, then start it; with ``skip`` (why: a maintenance pause), record it
        skipped instead.

        Recording first means a leader that loses the lease in between leaves the request for
        the next one; the unique (job, scheduled time) row makes taking it twice harmless.
        ``policy`` is the job's (read here when not given), ``waiting`` its pending retries
        (they hold slots).
        """
        with dispatching("scheduling.dispatch", {"scheduling.jobs": 1, "scheduling.job.id": job.id}):
            self._run_requested(job, requested_at, origin, take, skip, policy, waiting)

    def _run_requested(
        self,
        job: Job,
        requested_at: datetime,
        origin: Origin,
        take: Callable[[], bool],
        skip: str | None,
        policy: RunPolicy | None,
        waiting: int,
    ) -> None:
        if skip is not None:
            logger.info("Not running job %s now, as requested: %s", job.id, skip)
            self.recorder.record_not_run(job.id, [requested_at], Execution.Status.SKIPPED, skip, origin)
            take()
            return
        policy = policies_of([job.id])[job.id] if policy is None else policy
        target = self.target(job)
        target.count_busy([job])
        if not target.reserve(job, 1, waiting):
            self.recorder.record_not_run(
                job.id,
                [requested_at],
                Execution.Status.SKIPPED,
                "Skipped: the job was already running (max_instances reached)",
                origin,
            )
            take()
            return
        row = target.row(job, requested_at, origin)
        row.attempts = policy.attempts
        if (holder := self._lock_or_release(target, job, policy, row)) is not None:
            logger.info("Not running job %s now, as requested: %s", job.id, holder.skip_message)
            self.recorder.record_not_run(
                job.id, [requested_at], Execution.Status.SKIPPED, holder.skip_message, origin
            )
            take()
            return
        try:
            started = self.recorder.insert([row])
        except BaseException:
            target.release(job)
            raise
        if not take() or not started:
            # Already recorded (and run) by another scheduler, or taken by one meanwhile.
            target.release(job)
            return
        logger.info(
            "Running job %s now, as requested by %s%s",
            job.id,
            origin.requested_by or "a script",
            "" if origin.args is None and origin.kwargs is None else ", with arguments of its own",
        )
        target.submit(job, started, origin, policy)

    def _hand_over(self, plans: list[_Plan], fence: Fence | None) -> int:
        """Take the plans' locks, record their rows in one INSERT, then start their runs; returns
        runs not started.

        :raises LockTaken: a lock found free when the pass began was taken meanwhile (by a writer
            that slipped past the fence): nothing of the pass started, the next one starts over.
        """
        wanted = [plan.lock for plan in plans if plan.lock is not None]
        if lost := locks.take(wanted, fence):
            raise LockTaken(f"The lock(s) {', '.join(lost)} were taken by another scheduler meanwhile")
        started = self.recorder.insert([row for plan in plans for row in plan.rows], fence)
        runs: dict[str, list[Execution]] = {}
        for execution in started:
            runs.setdefault(execution.job_id, []).append(execution)
        unstarted = 0
        for plan in plans:
            if plan.reserved:
                unstarted += plan.target.submit(
                    plan.job, runs.get(plan.job.id, []), SCHEDULED, self.store.policy(plan.job.id)
                )
            for row in plan.rows:
                if row.status == Execution.Status.MISSED and row.pk is not None:
                    notify(signals.job_missed, row)
            for row in plan.busy:
                if row.pk is not None:
                    notify(signals.job_skipped, row)
        return unstarted

    def _calendars(self, jobs: list[Job]) -> dict[str, CalendarRule]:
        """The calendars the due jobs name, read in one query, and only when one names any."""
        names = {name for job in jobs for name in self.store.policy(job.id).calendars}
        return calendar_rules(names) if names else {}

    def _plan_contained(
        self,
        job: Job,
        now: datetime,
        skip: str | None,
        rules: Mapping[str, CalendarRule],
        ahead: datetime | None = None,
    ) -> _Plan | None:
        try:
            return self._plan(job, now, skip, rules, ahead)
        # Whatever one job's trigger or options raise is that job's failure, never the pass's.
        except Exception as exc:
            self._broken(job, exc)
            return None

    def _plan(
        self,
        job: Job,
        now: datetime,
        skip: str | None = None,
        rules: Mapping[str, CalendarRule] | None = None,
        ahead: datetime | None = None,
    ) -> _Plan:
        """The rows of ``job``'s due fires; with ``skip`` (a maintenance pause), the fires that
        would start are recorded skipped with it, and the job moves on as after a run. So are
        the fires inside a period of the job's calendars (``rules``: those of the pass). With
        ``ahead``, a job with no fire due yet may have its next one claimed (:meth:`_plan_ahead`)."""
        plan = _Plan(job, self.target(job))
        run_times, complete = due_fire_times(job, now)
        if not run_times:
            if ahead is not None:
                self._plan_ahead(plan, ahead, skip)
            return plan
        if not complete:
            self._skip_ahead(plan, run_times[0], now)
            return plan
        plan.last_fire = run_times[-1]
        if job.coalesce and len(run_times) > 1:
            plan.rows += self._missed(
                job, run_times[:-1], f"coalesced into the run scheduled for {run_times[-1]}"
            )
            run_times = run_times[-1:]
        elif len(run_times) > MAX_ROWS_PER_JOB:
            older, run_times = run_times[: -MAX_ROWS_PER_JOB + 1], run_times[-MAX_ROWS_PER_JOB + 1 :]
            plan.rows.append(self._summary(job, older, "not run: too far behind to run each missed fire"))
        on_time = []
        for run_time in run_times:
            message = missed_message(now - run_time, job.misfire_grace_time)
            if message is not None:
                logger.warning("Job %s missed its run at %s: %s", job.id, run_time, message)
                plan.rows.append(
                    self.recorder.not_run_row(job.id, run_time, Execution.Status.MISSED, message)
                )
            else:
                on_time.append(run_time)
        if not on_time:
            return plan
        if skip is not None:
            plan.rows += [
                self.recorder.not_run_row(job.id, run_time, Execution.Status.SKIPPED, skip)
                for run_time in on_time
            ]
            return plan
        if names := self.store.policy(job.id).calendars:
            on_time = self._outside_calendars(
                plan, on_time, [rules[n] for n in names if rules and n in rules]
            )
            if not on_time:
                return plan
        waiting = self._pending.get(job.id, 0)
        policy = self.store.policy(job.id)
        # A job with a lock runs one run at a time, and none while another job holds its lock.
        held = self._held.get(policy.lock) if policy.lock is not None else None
        allowed = 0 if held else plan.target.reserve(job, 1 if policy.lock else len(on_time), waiting)
        plan.reserved = allowed > 0
        for number, run_time in enumerate(on_time):
            if number < allowed:
                row = plan.target.row(job, run_time, SCHEDULED)
                row.attempts = policy.attempts
                plan.rows.append(row)
                if policy.lock is not None:
                    plan.lock = (policy.lock, row)
                    held = self._held[policy.lock] = Holder(policy.lock, job.id)
            elif policy.overlap != "skip" and not waiting:
                plan.rows.append(self._queued(plan, run_time, policy, held))
                waiting = self._pending[job.id] = 1
            else:
                why = busy_message(policy, waiting, held)
                logger.warning("Job %s: the fire at %s is not run: %s", job.id, run_time, why)
                plan.busy.append(self.recorder.not_run_row(job.id, run_time, Execution.Status.SKIPPED, why))
                plan.rows.append(plan.busy[-1])
        return plan

    def _plan_ahead(self, plan: _Plan, ahead: datetime, skip: str | None) -> None:
        """Claim the job's next fire, not due yet but by ``ahead``, when it would start.

        Only the plain case: a target that holds runs until their time, a free slot, no calendar,
        no lock held, no pending retry, no maintenance pause (``skip``). Any fire that would be
        recorded missed, skipped or queued is left to its time (``left``) and judged then, as
        without fire-ahead. Its row is running with no start: claimed, not started. One fire per
        job per pass: its next one is looked at in a later pass.
        """
        job, target = plan.job, plan.target
        fire = job.next_run_time
        if fire is None or fire.astimezone(UTC) > ahead.astimezone(UTC):
            return
        policy = self.store.policy(job.id)
        held = self._held.get(policy.lock) if policy.lock is not None else None
        waiting = self._pending.get(job.id, 0)
        if (
            skip is not None
            or not target.holds_runs
            or policy.calendars
            or held
            or waiting
            or not target.reserve(job, 1, 0)
        ):
            # Nothing else wakes the loop for it when changes are pushed: the store's next run
            # time after the window is later, and this job was not moved on.
            self.left = fire if self.left is None or fire < self.left else self.left
            return
        plan.reserved = True
        row = target.row(job, fire, SCHEDULED)
        row.started_at, row.attempts = None, policy.attempts
        plan.rows.append(row)
        if policy.lock is not None:
            plan.lock = (policy.lock, row)
            self._held[policy.lock] = Holder(policy.lock, job.id)
        plan.last_fire = fire

    def _queued(self, plan: _Plan, run_time: datetime, policy: RunPolicy, held: Holder | None) -> Execution:
        """The row of a fire queued behind a run still going (overlap "queue" or "replace"), or
        behind the run of another job holding its lock (``held``).

        It waits as a pending retry does — ``retry_at`` set, holding a slot — and
        :meth:`run_retries` starts it once a slot, and its lock, are free. With "replace", the
        oldest run of the job going is asked to stop, as a cancel would (only the process pool
        and task workers can); another job's run holding the lock is never stopped.
        """
        job = plan.job
        row = plan.target.row(job, run_time, SCHEDULED)
        row.status, row.retry_at, row.started_at = Execution.Status.QUEUED, run_time, None
        row.attempts, row.queued = policy.attempts, True
        if held is not None and held.job_id != job.id:
            logger.info(
                "Job %s: the fire at %s is queued behind job %s, which holds the lock %r",
                job.id,
                run_time,
                held.job_id,
                held.name,
            )
        elif policy.overlap == "replace":
            # A run claimed ahead and not started yet has no start: it is the newest, not the
            # oldest (SQLite and MariaDB sort NULL first).
            oldest = (
                Execution.objects.filter(job_id=job.id)
                .running()
                .order_by(F("started_at").asc(nulls_last=True), "pk")
                .first()
            )
            if oldest is not None:
                Execution.objects.filter(pk=oldest.pk, cancel_requested_at__isnull=True).running().update(
                    cancel_requested_at=timezone.now(),
                    cancel_requested_by=f"overlap='replace' (the fire at {run_time:%Y-%m-%d %H:%M:%S})",
                )
                logger.info("Job %s: its run %s is replaced by the fire at %s", job.id, oldest.pk, run_time)
        else:
            logger.info("Job %s: the fire at %s is queued behind the run still going", job.id, run_time)
        return row

    def run_retries(self, now: datetime) -> None:
        """Start the next attempt of each failed run whose retry is due at ``now``.

        Like a run request: the attempt's row is recorded first (fenced; unique per job,
        scheduled time and attempt), then the retry is taken (``retry_at`` cleared, fenced),
        then the run starts; a scheduler that lost the lease in between leaves the retry to the
        next, which finds the attempt recorded and only takes it. A retry whose job has all
        its max_instances slots busy waits for a later pass; one due during a maintenance pause
        is recorded skipped, as fires are.
        """
        failed_runs = due_retries(now, RETRIES_PER_PASS)
        if not failed_runs:
            return
        with dispatching("scheduling.dispatch", {"scheduling.retries": len(failed_runs)}):
            self._start_retries(failed_runs, now)

    def _start_retries(self, failed_runs: list[Execution], now: datetime) -> None:
        pending = pending_retries()
        pause = maintenance_in_force(now)
        for failed in failed_runs:
            try:
                self._retry(failed, pending, pause.skip_message if pause is not None else None)
            # The lease, or the database, is the loop's to handle (it stands down, or backs off).
            except (FenceLost, DatabaseError):
                raise
            # One run's retry failing to start is that run's problem, never the pass's.
            except Exception:
                logger.exception("Job %s: could not start the retry of run %s", failed.job_id, failed.pk)

    def _retry(self, failed: Execution, pending: dict[str, int], skip: str | None) -> None:
        if failed.status == Execution.Status.QUEUED:
            self._start_queued(failed, pending, skip)
            return
        origin = Origin(failed.origin, failed.requested_by, failed.args, failed.kwargs)
        attempt = failed.attempt + 1
        if skip is not None:
            row = self.recorder.not_run_row(
                failed.job_id, failed.scheduled_at, Execution.Status.SKIPPED, skip, origin
            )
            row.attempt, row.attempts = attempt, failed.attempts
            self.recorder.insert([row])
            self._take_retry(failed)
            return
        try:
            job = self.store.lookup_job(failed.job_id)
        # Loading imports the job's function: any error means it cannot run now.
        except Exception as exc:
            self._not_retried(failed, describe_exception(exc)[0])
            return
        if job is None:
            self._not_retried(failed, "the job is no longer in the store")
            return
        if job.next_run_time is None:  # paused: an operator stopped its runs, retries included
            self._not_retried(failed, "the job was paused")
            return
        policy = policies_of([job.id])[job.id]  # read before a slot is taken: it may raise
        target = self.target(job)
        target.count_busy([job])
        others = max(pending.get(job.id, 1) - 1, 0)
        if not target.reserve(job, 1, others):
            return  # still pending: it holds its slot and is tried again in a later pass
        row = target.row(job, failed.scheduled_at, origin)
        row.attempt = attempt
        if self._lock_or_release(target, job, policy, row) is not None:
            return  # still pending: its lock is held; tried again in a later pass
        try:
            started = self._record_attempt(row, failed)
        except BaseException:
            target.release(job)  # nothing was written: the slot must not stay taken
            raise
        if not started:
            target.release(job)  # taken by another scheduler, or recorded by one already
            return
        pending[job.id] = others
        logger.info("Retrying job %s: attempt %d of %d", job.id, attempt, failed.attempts)
        target.submit(job, started, origin, policy)

    def _record_attempt(self, row: Execution, failed: Execution) -> list[Execution]:
        """Record the next attempt of ``failed`` and take its retry, both or neither; returns the
        attempt's row when it is this scheduler's to start.

        One transaction: a take that fails (an error, or another scheduler took it) must not
        leave an attempt row "running" that nobody starts. Its writes are not retried on a
        broken connection, which loses the transaction: the loop's backoff tries the whole
        again. An attempt recorded by a scheduler that crashed before taking it is only taken.
        """
        row.attempt, row.attempts = failed.attempt + 1, failed.attempts
        with transaction.atomic(using=router.db_for_write(Execution)):
            started = self.recorder.insert([row], retry=False)
            if not self._take_retry(failed):
                transaction.set_rollback(True, using=router.db_for_write(Execution))
                return []
        return started

    def _start_queued(self, queued: Execution, pending: dict[str, int], skip: str | None) -> None:
        """Start a fire queued behind a run of its job once a slot is free (fenced: one
        scheduler starts it); skip it, saying why, when it can no longer run."""
        if skip is not None:
            self._end_queued(queued, skip)
            return
        try:
            job = self.store.lookup_job(queued.job_id)
        # Loading imports the job's function: any error means it cannot run now.
        except Exception as exc:
            self._end_queued(queued, f"Skipped: the job could not be loaded: {describe_exception(exc)[0]}")
            return
        if job is None or job.next_run_time is None:
            why = "left the store" if job is None else "was paused"
            self._end_queued(queued, f"Skipped: the job {why} while the fire was queued")
            return
        policy = policies_of([job.id])[job.id]  # read before a slot is taken: it may raise
        target = self.target(job)
        target.count_busy([job])
        others = max(pending.get(job.id, 1) - 1, 0)
        if not target.reserve(job, 1, others):
            return  # the run it waits for is still going: looked at again at the next poll
        fresh = target.row(job, queued.scheduled_at, SCHEDULED)
        fresh.attempt = queued.attempt
        if self._lock_or_release(target, job, policy, fresh) is not None:
            return  # its lock is held by another run: looked at again at the next poll
        where = {"started_at": fresh.started_at, "hostname": fresh.hostname, "pid": fresh.pid}
        where["enqueued_at"] = fresh.enqueued_at  # a wait for a task worker counts from now
        if not self._fenced(queued).start_queued(fresh.status, instance=fresh.instance, **where):
            target.release(job)  # started by another scheduler, or cancelled meanwhile
            return
        queued.status, queued.retry_at, queued.instance = fresh.status, None, fresh.instance
        queued.started_at, queued.hostname, queued.pid = fresh.started_at, fresh.hostname, fresh.pid
        queued.enqueued_at = fresh.enqueued_at
        pending[job.id] = others
        logger.info("Job %s: the fire queued for %s starts now", job.id, queued.scheduled_at)
        target.submit(job, [queued], SCHEDULED, policy)

    def _lock_or_release(
        self, target: RunTarget, job: Job, policy: RunPolicy, row: Execution
    ) -> Holder | None:
        """:meth:`_take_lock`, giving back the slot reserved for the run when the lock is held
        by another (returned) or could not be taken (raised)."""
        try:
            holder = self._take_lock(policy, row)
        except BaseException:
            target.release(job)
            raise
        if holder is not None:
            target.release(job)
        return holder

    def _take_lock(self, policy: RunPolicy, row: Execution) -> Holder | None:
        """Take the lock of ``policy``, if it names one, for the run of ``row`` (not yet recorded);
        returns who holds it when it cannot be taken (None: taken, or no lock to take)."""
        if policy.lock is None:
            return None
        if (holder := locks.holders([policy.lock]).get(policy.lock)) is not None:
            return holder
        if locks.take([(policy.lock, row)], self.recorder.fence):
            return locks.holders([policy.lock]).get(policy.lock, Holder(policy.lock, "(another scheduler)"))
        return None

    def _end_queued(self, queued: Execution, why: str) -> None:
        logger.warning(
            "Job %s: the fire queued for %s is not run: %s", queued.job_id, queued.scheduled_at, why
        )
        self._fenced(queued).filter(status=Execution.Status.QUEUED).update(
            status=Execution.Status.SKIPPED, retry_at=None, finished_at=timezone.now(), exception=why
        )

    def _fenced(self, failed: Execution) -> ExecutionQuerySet:
        """The failed run's row, to change only while this scheduler still holds the lease."""
        fence = self.recorder.fence
        runs = Execution.objects.filter(pk=failed.pk)
        return runs if fence is None else runs.filter(fence.exists())

    def _take_retry(self, failed: Execution) -> bool:
        return bool(self._fenced(failed).take_retry())

    def _not_retried(self, failed: Execution, why: str) -> None:
        logger.warning("Job %s: run %s not retried: %s", failed.job_id, failed.pk, why)
        self._fenced(failed).awaiting_retry().update(
            retry_at=None, exception=f"{failed.exception}\n\nNot retried: {why}"
        )

    def _outside_calendars(
        self, plan: _Plan, fires: list[datetime], rules: list[CalendarRule]
    ) -> list[datetime]:
        """The fires no calendar excludes; the others get a skipped row naming calendar and period.

        A calendar deleted while a job still names it excludes nothing: its runs go on, as a
        warning says."""
        if len(rules) < len(self.store.policy(plan.job.id).calendars):
            logger.warning("Job %s names a calendar that no longer exists; it excludes nothing", plan.job.id)
        kept = []
        for fire in fires:
            if (found := exclusion(fire, rules)) is None:
                kept.append(fire)
                continue
            logger.info("Job %s: the fire at %s is skipped, %s", plan.job.id, fire, found.reason)
            plan.rows.append(
                self.recorder.not_run_row(plan.job.id, fire, Execution.Status.SKIPPED, found.skip_message)
            )
        return kept

    def _missed(self, job: Job, fires: list[datetime], why: str) -> list[Execution]:
        """Rows for fires that will not run: one each, the oldest beyond a cap sharing one row."""
        logger.warning("Job %s missed %d run(s) while no scheduler ran it", job.id, len(fires))
        listed = fires
        rows = []
        if len(fires) > MAX_ROWS_PER_JOB:
            older, listed = fires[: -MAX_ROWS_PER_JOB + 1], fires[-MAX_ROWS_PER_JOB + 1 :]
            rows.append(self._summary(job, older, why))
        rows += [
            self.recorder.not_run_row(job.id, moment, Execution.Status.MISSED, f"Missed: {why}")
            for moment in listed
        ]
        return rows

    def _summary(self, job: Job, fires: list[datetime], why: str) -> Execution:
        """One row for many missed fires, at the first of them."""
        message = (
            f"Missed: {len(fires)} fires from {fires[0]} to {fires[-1]}, recorded as this one row; {why}"
        )
        return self.recorder.not_run_row(job.id, fires[0], Execution.Status.MISSED, message)

    def _skip_ahead(self, plan: _Plan, first: datetime, now: datetime) -> None:
        """A job more than MAX_FIRE_TIMES fires behind: one row says so, and it moves to now."""
        job = plan.job
        next_run_time = job.trigger.get_next_fire_time(None, now)
        if next_run_time is not None and next_run_time.astimezone(UTC) <= first.astimezone(UTC):
            raise ScheduleError(f"its trigger went backwards, from {first} to {next_run_time}")
        message = (
            f"Missed: more than {MAX_FIRE_TIMES} fires were due since {first}; none of them ran, and "
            f"the job skipped ahead to its next fire after {now}"
        )
        logger.warning("Job %s: %s", job.id, message)
        plan.rows.append(self.recorder.not_run_row(job.id, first, Execution.Status.MISSED, message))
        plan.last_fire, plan.next_run_time = first, next_run_time

    def _broken(self, job: Job, exc: Exception) -> None:
        message, formatted = describe_exception(exc)
        reason = f"The schedule could not be computed: {message}"
        flag_broken(job.id, exc, reason)
        if job.next_run_time is not None:
            row = self.recorder.not_run_row(job.id, job.next_run_time, Execution.Status.FAILED, reason)
            row.traceback = formatted
            self.recorder.insert([row])

    def _advance(self, plans: list[_Plan], now: datetime, fence: Fence | None) -> datetime | None:
        """Move each job to its next run time in the store; jobs with none left are removed."""
        moving, finished = [], []
        for plan in plans:
            if plan.last_fire is None:
                continue
            # A fire claimed ahead is the trigger's "now": from an earlier one, a cron trigger
            # would find that very fire again.
            ahead = plan.last_fire.astimezone(UTC) > now.astimezone(UTC)
            try:
                next_run_time = plan.next_run_time or plan.job.trigger.get_next_fire_time(
                    plan.last_fire, plan.last_fire if ahead else now
                )
                last = plan.last_fire.astimezone(UTC)
                if ahead and next_run_time is not None and next_run_time.astimezone(UTC) <= last:
                    raise ScheduleError(f"its trigger went backwards, from {last} to {next_run_time}")
            except Exception as exc:
                self._broken(plan.job, exc)
                continue
            if next_run_time is None:
                finished.append(plan.job)
            else:
                plan.job.next_run_time = next_run_time  # an aware datetime from the trigger
                moving.append(plan.job)
        left_alone = set(self.store.advance_jobs(moving, fence)) if moving else set()
        for job in finished:
            self.store.remove_fired(job, fence)
        return min((job.next_run_time for job in moving if job.id not in left_alone), default=None)


def busy_message(policy: RunPolicy, waiting: int, held: Holder | None) -> str:
    """Why a fire that cannot start now is skipped."""
    if waiting:
        return QUEUED_AHEAD if policy.overlap != "skip" else RETRY_PENDING
    return held.skip_message if held is not None else BUSY


def due_fire_times(job: Job, now: datetime) -> tuple[list[datetime], bool]:
    """The job's fire times from its next run time up to ``now``, and whether that is all of them.

    At most MAX_FIRE_TIMES, each strictly later than the one before — compared as instants, in
    UTC: aware datetimes of one zone compare by wall clock and ignore ``fold``, so an hour
    repeated at a daylight-saving change would look like no time passed.

    :raises ScheduleError: when the trigger does not move forward.
    """
    times: list[datetime] = []
    moment = job.next_run_time
    limit = now.astimezone(UTC)
    while moment is not None and moment.astimezone(UTC) <= limit:
        if times and moment.astimezone(UTC) <= times[-1].astimezone(UTC):
            raise ScheduleError(f"its trigger went backwards, from {times[-1]} to {moment}")
        if len(times) == MAX_FIRE_TIMES:
            return times, False
        times.append(moment)
        moment = job.trigger.get_next_fire_time(moment, now)
    return times, True
