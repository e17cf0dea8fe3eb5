"""Turning due jobs into runs, in batches: what stock APScheduler does one job at a time.

Stock APScheduler, per due job and in the scheduler thread: a SELECT ... FOR UPDATE and an UPDATE
of the job, then history writes from event listeners. With hundreds of jobs due together that
is thousands of round trips, and punctuality collapses. Here, for all the jobs due at one
moment: one INSERT of their history rows (running, missed, skipped) — so every run is on disk
before it starts —, then the hand-over to the thread pool, then one UPDATE of their store rows.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError

from scheduling import signals
from scheduling.executors import RecordingThreadPoolExecutor, notify
from scheduling.handoff import TaskHandOff
from scheduling.history import Recorder
from scheduling.models import Execution
from scheduling.placement import TASKS, Placement
from scheduling.store import JobStore
from scheduling.task_calls import frozen

logger = logging.getLogger(__name__)

MAX_COALESCED_RECORDS = 1000  # rows written for one coalesced run, so a long outage stays cheap


@dataclass
class _Plan:
    job: Job
    placement: Placement
    last_fire: datetime | None = None
    rows: list[Execution] = field(default_factory=list)
    reserved: bool = False


class Dispatcher:
    def __init__(self, store: JobStore, executor: RecordingThreadPoolExecutor, recorder: Recorder) -> None:
        self.store = store
        self.executor = executor
        self.recorder = recorder
        self.handoff = TaskHandOff(recorder)

    def dispatch(self, jobs: list[Job], now: datetime) -> datetime | None:
        """Record and start the runs of ``jobs``, due at ``now``; returns their next run time.

        All in one hand-over: recording them a hundred at a time, so the first start sooner, was
        measured to cost a third of the throughput (2,000 due at once on PostgreSQL: 3,300 runs/s
        against 5,150) for a p99 lateness barely lower (1,000 jobs every second: 332 ms, 375 ms).
        """
        # max_instances of runs in task workers is counted in the history: once for the pass.
        in_tasks = self.handoff.unfinished([job for job in jobs if Placement.of(job.executor).kind == TASKS])
        plans = [self._plan(job, now, in_tasks) for job in jobs]
        unstarted = self._hand_over(plans)
        if unstarted:
            # Their rows stay "running" until Runner.stop records them as interrupted.
            logger.info("The scheduler is stopping: %d run(s) due now were not started", unstarted)
        return self._advance(plans, now)

    def _hand_over(self, plans: list[_Plan]) -> int:
        """Record the plans' rows in one INSERT, then start their runs; returns runs not started."""
        started = self.recorder.insert([row for plan in plans for row in plan.rows])
        runs: dict[str, list[Execution]] = {}
        for execution in started:
            runs.setdefault(execution.job_id, []).append(execution)
        unstarted = 0
        for plan in plans:
            own_runs = runs.get(plan.job.id, [])
            if plan.reserved and plan.placement.kind == TASKS:
                self.handoff.submit(plan.job, own_runs)
            elif plan.reserved and not self.executor.submit_recorded(plan.job, own_runs):
                unstarted += len(own_runs)
            for row in plan.rows:
                if row.status == Execution.Status.MISSED:
                    notify(signals.job_missed, row)
        return unstarted

    def _plan(self, job: Job, now: datetime, in_tasks: dict[str, int]) -> _Plan:
        plan = _Plan(job, Placement.of(job.executor))
        run_times = job._get_run_times(now)
        if not run_times:
            return plan
        plan.last_fire = run_times[-1]
        if job.coalesce and len(run_times) > 1:
            self._coalesced(plan, run_times[:-1], run_times[-1])
            run_times = run_times[-1:]
        on_time = []
        for run_time in run_times:
            lateness = now - run_time
            if job.misfire_grace_time is not None and lateness > timedelta(seconds=job.misfire_grace_time):
                logger.warning("Job %s missed its run at %s by %s", job.id, run_time, lateness)
                message = (
                    f"Missed: started {lateness.total_seconds():.1f} s late, after its misfire grace time "
                    f"of {job.misfire_grace_time} s"
                )
                plan.rows.append(self.recorder.ended_row(job.id, run_time, Execution.Status.MISSED, message))
            else:
                on_time.append(run_time)
        if not on_time:
            return plan
        if plan.placement.kind == TASKS:
            plan.reserved = self.handoff.reserve(job, in_tasks)
        else:
            plan.reserved = self.executor.reserve(job)
        call = frozen(job) if plan.placement.kind == TASKS else None
        for run_time in on_time:
            if plan.reserved:
                plan.rows.append(
                    self.recorder.running_row(job.id, run_time, ran_in=plan.placement.kind, call=call)
                )
            else:
                logger.warning("Job %s skipped: its previous run is still going", job.id)
                plan.rows.append(
                    self.recorder.ended_row(
                        job.id,
                        run_time,
                        Execution.Status.SKIPPED,
                        "Skipped: the previous run was still going (max_instances reached)",
                    )
                )
        return plan

    def _coalesced(self, plan: _Plan, skipped: list[datetime], kept: datetime) -> None:
        """Record the fires a coalesced run stands for, which APScheduler silently drops."""
        job = plan.job
        logger.warning(
            "Job %s missed %d run(s) while no scheduler ran it; running it once", job.id, len(skipped)
        )
        message = f"Missed: coalesced into the run scheduled for {kept.isoformat()}"
        if len(skipped) > MAX_COALESCED_RECORDS:
            unlisted = len(skipped) - MAX_COALESCED_RECORDS
            message += f" ({len(skipped)} fires missed in all; the {unlisted} oldest have no row)"
            skipped = skipped[-MAX_COALESCED_RECORDS:]
        plan.rows.extend(
            self.recorder.ended_row(job.id, moment, Execution.Status.MISSED, message) for moment in skipped
        )

    def _advance(self, plans: list[_Plan], now: datetime) -> datetime | None:
        """Move each job to its next run time in the store; jobs with none left are removed."""
        moving, finished = [], []
        for plan in plans:
            if plan.last_fire is None:
                continue
            next_run_time = plan.job.trigger.get_next_fire_time(plan.last_fire, now)
            if next_run_time is None:
                finished.append(plan.job.id)
            else:
                plan.job.next_run_time = next_run_time  # an aware datetime from the trigger
                moving.append(plan.job)
        if moving:
            self.store.update_jobs(moving)
        for job_id in finished:
            # A job deleted meanwhile by someone else has come to the same end.
            with contextlib.suppress(JobLookupError):
                self.store.remove_job(job_id)
        return min((job.next_run_time for job in moving), default=None)
