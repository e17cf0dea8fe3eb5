"""The scheduler service: start-up checks, sync, the scheduling loop, heartbeat and shutdown.

Drivable from tests without a subprocess: ``Runner().start()`` ... ``runner.stop()``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_STOPPED
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from scheduling import checks, declarations, history, identity
from scheduling.conf import settings
from scheduling.dispatch import Dispatcher
from scheduling.executors import RecordingThreadPoolExecutor
from scheduling.fencing import FenceLost
from scheduling.finisher import Finisher
from scheduling.leadership import Leadership
from scheduling.models import Execution, RunRequest, SchedulerInstance
from scheduling.placement import PROCESSES, TASKS, Placement
from scheduling.processes import ProcessPool
from scheduling.store import JobStore
from scheduling.sync import SyncReport, sync
from scheduling.task_calls import frozen

logger = logging.getLogger(__name__)

MAX_SLEEP = 3600.0  # seconds; the poll catches anything earlier
DISPATCH_BATCH = 1000  # jobs started per pass of the loop; more due ones go in the next pass
RUN_REQUESTS_PER_TICK = 100
ACTIVATION_RETRY_MAX = 60.0  # seconds between attempts to start scheduling after a failed one


class SchedulerStartError(Exception):
    """The scheduler cannot start; the message says why and what to do."""


def check_database(alias: str = "default") -> None:
    """Fail clearly when the database is unreachable or not fully migrated."""
    connection = connections[alias]
    where = f"{connection.vendor} database {connection.settings_dict.get('NAME')!s}"
    host = connection.settings_dict.get("HOST")
    if host:
        where += f" on {host}:{connection.settings_dict.get('PORT') or 'default port'}"
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise SchedulerStartError(f"Cannot reach the {where}: {exc}".strip()) from exc
    if plan:
        pending = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan)
        raise SchedulerStartError(
            f"The {where} has {len(plan)} unapplied migration(s): {pending}. Run 'manage.py migrate' first."
        )


def check_sqlite_machines(alias: str = "default") -> None:
    """Refuse to start beside a live scheduler on another machine sharing this SQLite file (E003).

    The system check sees only schedulers already running; here this machine counts too.
    """
    if connections[alias].vendor != "sqlite":
        return
    hosts = set(SchedulerInstance.objects.alive().values_list("hostname", flat=True))
    for message in checks.sqlite_hosts_messages(hosts | {socket.gethostname()}):
        raise SchedulerStartError(f"{message.msg} {message.hint} ({message.id})")


def drop_broken_connections() -> None:
    """Close this thread's connections that failed, so the next query reconnects."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
            connection.close()


class Scheduler(BackgroundScheduler):
    """A BackgroundScheduler whose loop also notices changes made by other processes.

    Stock APScheduler sleeps until its own next wake-up, so a job added, resumed or rescheduled
    elsewhere waits until then (or is found late and dropped). Every ``poll_interval`` this loop
    asks the store for its earliest next run time (one indexed query) and wakes up early if it
    moved earlier. Database errors anywhere in the loop are logged and retried with backoff; in
    stock APScheduler an error in ``update_job`` ends the loop for good.
    """

    def __init__(
        self,
        *,
        poll_interval: float,
        on_tick: Callable[[], None] | None = None,
        may_dispatch: Callable[[], bool] | None = None,
        dispatcher: Dispatcher | None = None,
        on_fence_lost: Callable[[FenceLost], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.poll_interval = poll_interval
        self.on_tick = on_tick
        self.may_dispatch = may_dispatch or (lambda: True)
        self.dispatcher = dispatcher
        self.on_fence_lost = on_fence_lost

    def _main_loop(self) -> None:
        try:
            self._loop()
        finally:
            connections.close_all()

    def _loop(self) -> None:
        next_wakeup: datetime | None = None  # None: look for due jobs now
        failures = 0
        while self.state != STATE_STOPPED:
            if next_wakeup is not None:
                # While the database is failing, wait out the backoff instead of polling it.
                cap = MAX_SLEEP if failures else self.poll_interval
                wait = min((next_wakeup - self._now()).total_seconds(), cap)
                if self._event.wait(max(wait, 0)):
                    next_wakeup = None
                self._event.clear()
                if self.state == STATE_STOPPED:
                    break
            try:
                next_wakeup = self._tick(next_wakeup)
            except FenceLost as exc:
                # Not a failure to retry: another scheduler leads now, and this one stands by.
                if self.on_fence_lost is not None:
                    self.on_fence_lost(exc)
                next_wakeup = self._now() + timedelta(seconds=self.poll_interval)
                continue
            except DatabaseError as exc:
                failures += 1
                delay = min(0.5 * 2**failures, settings.DATABASE_RETRY_MAX)
                (logger.warning if failures == 1 else logger.debug)(
                    "Database error in the scheduler loop (%s); retrying in %.1f s", exc, delay
                )
                drop_broken_connections()
                next_wakeup = self._now() + timedelta(seconds=delay)
                continue
            # The loop must outlive any surprise (e.g. a job deleted by another process between
            # reading and updating it); the next pass starts from fresh database state.
            except Exception:
                failures += 1
                logger.exception("Unexpected error in the scheduler loop; retrying in 1 s")
                next_wakeup = self._now() + timedelta(seconds=1)
                continue
            if failures:
                logger.info("The scheduler loop recovered after %d failed attempt(s)", failures)
                failures = 0

    def _tick(self, next_wakeup: datetime | None) -> datetime:
        drop_broken_connections()
        # Due runs go first, checked against the lease by this process's clock alone; the
        # housekeeping's statements (lease renewal, run requests, heartbeat) follow them, so
        # they do not delay runs due on the second.
        due = self.state != STATE_PAUSED and self.may_dispatch() and self._due(next_wakeup)
        if due:
            next_wakeup = self._dispatch_due()
        if self.on_tick is not None:
            self.on_tick()
        return next_wakeup or self._now() + timedelta(seconds=self.poll_interval)

    def _dispatch_due(self) -> datetime:
        """Start what is due, in batches (see scheduling.dispatch); returns when to look again.

        That is the store's earliest next run time itself, not "now + the seconds until it": a
        moment computed from a later clock reading falls just after it, and then every poll
        would find that run "earlier" than the wake-up and run the due-jobs query for nothing.
        """
        latest = self._now() + timedelta(seconds=MAX_SLEEP)
        if self.dispatcher is None:
            wait_seconds = super()._process_jobs()
            return (
                latest if wait_seconds is None else min(self._now() + timedelta(seconds=wait_seconds), latest)
            )
        now = self._now()
        due, later = self._jobstores["default"].get_due_jobs_and_next_run_time(now, DISPATCH_BATCH)
        moved = self.dispatcher.dispatch(due, now) if due else None
        return min(moment for moment in (later, moved, latest) if moment is not None)

    def _due(self, next_wakeup: datetime | None) -> bool:
        if next_wakeup is None or self._now() >= next_wakeup:
            return True
        earliest = self._jobstores["default"].get_next_run_time()
        return earliest is not None and earliest < next_wakeup

    def _now(self) -> datetime:
        return datetime.now(self.timezone)


class Runner:
    """One scheduler process: owns the store, the executor, the loop and the heartbeat."""

    def __init__(self, *, threads: int | None = None, poll_interval: float | None = None) -> None:
        self.threads = threads or settings.THREADS
        self.poll_interval = poll_interval or settings.POLL_INTERVAL
        self.started = False
        self.active = False
        self.stopping = False
        self.sync_report = SyncReport()
        self._last_beat = 0.0
        self._next_claim = 0.0
        self._activation_failures = 0
        self._leading = threading.Lock()

    def start(self) -> None:
        check_database()
        check_sqlite_machines()
        self.instance = SchedulerInstance.objects.create(
            hostname=socket.gethostname(), pid=os.getpid(), **identity.fields()
        )
        self.leadership = Leadership(self.instance.pk)
        self._last_beat = time.monotonic()
        self.finisher = Finisher()
        self.recorder = recorder = history.Recorder(self.instance, self.finisher)
        self.processes = ProcessPool(settings.PROCESSES)
        self.executor = RecordingThreadPoolExecutor(
            recorder, max_workers=self.threads, processes=self.processes
        )
        self.store = store = JobStore()
        self.dispatcher = Dispatcher(store, self.executor, recorder)
        self.scheduler = Scheduler(
            poll_interval=self.poll_interval,
            on_tick=self._on_tick,
            may_dispatch=self._holds_lease,
            dispatcher=self.dispatcher,
            on_fence_lost=self._fence_lost,
            jobstores={"default": store},
            executors={"default": self.executor},
            timezone=timezone.get_default_timezone(),
            jobstore_retry_interval=settings.DATABASE_RETRY_MAX,
        )
        # Started paused: it schedules only while it holds the lease (see _lead).
        self.scheduler.start(paused=True)
        self.started = True
        logger.info("Scheduler %s started with %d declared job(s)", self.instance, len(declarations.registry))
        self._lead()

    def stop(self, timeout: float | None = None) -> int:
        """Stop scheduling, wait up to ``timeout`` s for running jobs; returns runs interrupted.

        The lease is renewed (and the heartbeat beaten) while runs are still going, and given up
        only once the last one ended or was recorded interrupted: a standby that took over
        earlier would start a second run of a job still running here.
        """
        timeout = settings.SHUTDOWN_TIMEOUT if timeout is None else timeout
        self.stopping = True
        running = self.executor.running
        if running:
            logger.info("Stopping: waiting up to %g s for %d running job(s)", timeout, running)
        self.scheduler.shutdown(wait=False)
        finished = self._wait_holding_lease(timeout)
        self.processes.shutdown(wait=finished)
        # The outcomes of the runs that ended go to disk before the rest are marked interrupted.
        self.finisher.stop()
        # Any row of ours still "running" now is not: a run still going past the timeout, or one
        # recorded just as the pool stopped taking work.
        reason = (
            "Interrupted: the scheduler stopped and did not wait longer than {timeout:g} s"
            if not finished
            else "Interrupted: the scheduler stopped before the run could start"
        ).format(timeout=timeout)
        interrupted = self.recorder.interrupt_own_runs(reason)
        if interrupted:
            logger.warning("Stopped with %d run(s) unfinished; recorded as interrupted", interrupted)
        if self.active:
            self.leadership.release()
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(
            stopped_at=timezone.now(), role=SchedulerInstance.Role.STANDBY
        )
        connections.close_all()
        logger.info("Scheduler %s stopped", self.instance)
        return interrupted

    def _wait_holding_lease(self, timeout: float) -> bool:
        """Wait for running jobs, renewing the lease meanwhile; True if all ended in time."""
        deadline = time.monotonic() + timeout
        while True:
            step = min(settings.LEASE_RENEW_INTERVAL, max(deadline - time.monotonic(), 0))
            if self.executor.wait(step):
                return True
            if time.monotonic() >= deadline:
                return False
            try:
                if self.active and not self.leadership.claim():
                    self.active = False
                    logger.warning(
                        "Scheduler %s lost its lease while waiting for its running jobs: a standby may "
                        "start them again",
                        self.instance,
                    )
                self._beat_if_due(housekeeping=False)
            except DatabaseError as exc:
                logger.warning("Could not renew the lease while stopping (%s); retrying", exc)
                drop_broken_connections()

    def _holds_lease(self) -> bool:
        return self.active and self.leadership.held

    def _on_tick(self) -> None:
        if self.stopping:
            return  # Runner.stop releases the lease and records the rest: nothing to lead any more
        self._lead()
        self._beat_if_due()
        if self.active:
            self._take_run_requests()

    def _lead(self) -> None:
        """Schedule while holding the lease; stand by otherwise."""
        with self._leading:
            if self.active and not self.leadership.held:
                # Checked by the local clock first: this holds even when the database is away.
                self._step_down("its lease ran out before it could renew it")
            if time.monotonic() < self._next_claim:
                return
            self._next_claim = time.monotonic() + settings.LEASE_RENEW_INTERVAL
            held = self.leadership.claim()
            if held and not self.active:
                self._activate()
            elif not held and self.active:
                self._step_down("another scheduler holds the lease")

    def _activate(self) -> None:
        try:
            self._become_active()
        except FenceLost as exc:
            self._step_down(str(exc))
        # Whatever stops it from scheduling (a sync that cannot resolve a function reference, a
        # database error), holding the lease while scheduling nothing would block every standby.
        except Exception as exc:
            self._activation_failed(exc)

    def _become_active(self) -> None:
        history.recover_interrupted()
        self.executor.elsewhere = history.running_elsewhere(self.instance)
        self.recorder.fence = self.leadership.fence
        self.sync_report = sync(self.store, declarations.registry.values())
        if any(Placement.of(item.executor).kind == PROCESSES for item in declarations.registry.values()):
            self.processes.warm_up()
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(
            role=SchedulerInstance.Role.ACTIVE, standby_reason=""
        )
        self.active = True
        self._activation_failures = 0
        self.scheduler.resume()
        logger.info(
            "Scheduler %s holds the lease (epoch %d): it schedules and runs jobs",
            self.instance,
            self.leadership.fence.epoch if self.leadership.fence else 0,
        )

    def _activation_failed(self, exc: Exception) -> None:
        message, _ = history.describe_exception(exc)
        self._activation_failures += 1
        delay = min(2.0**self._activation_failures, ACTIVATION_RETRY_MAX)
        reason = (
            f"It could not start scheduling: {message}; it gave the lease up and tries again in {delay:g} s"
        )
        logger.error("Scheduler %s: %s", self.instance, reason, exc_info=exc)
        self.recorder.fence = None
        self.leadership.release()
        self._next_claim = time.monotonic() + delay
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(
            role=SchedulerInstance.Role.STANDBY, standby_reason=reason
        )

    def _fence_lost(self, exc: FenceLost) -> None:
        with self._leading:
            self.leadership.fence = None
            if self.active:
                self._step_down(f"{exc}; another scheduler took over")

    def _step_down(self, reason: str) -> None:
        self.scheduler.pause()
        self.active = False
        self.recorder.fence = None
        logger.warning("Scheduler %s stopped scheduling: %s; standing by", self.instance, reason)
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(role=SchedulerInstance.Role.STANDBY)

    def _take_run_requests(self) -> None:
        for request in RunRequest.objects.all()[:RUN_REQUESTS_PER_TICK]:
            self._run_requested(request)

    def _run_requested(self, request: RunRequest) -> None:
        """Record the requested run (fenced), then take the request, then start the run.

        Recording first means a leader that loses the lease in between leaves the request for
        the next one; the unique (job, scheduled time) row makes taking it twice harmless.
        """
        origin = history.Origin(Execution.Origin.MANUAL, request.requested_by)
        try:
            job = self.store.lookup_job(request.job_id)
        # Loading imports the job's function: any error means it cannot run now.
        except Exception as exc:
            message, _ = history.describe_exception(exc)
            self.recorder.record(
                request.job_id, [request.requested_at], Execution.Status.FAILED, message, origin
            )
            self._taken(request)
            return
        if job is None:
            logger.warning("Dropped a request to run %s: no such job in the store", request.job_id)
            self._taken(request)
            return
        in_tasks = Placement.of(job.executor).kind == TASKS
        reserved = self.dispatcher.handoff.reserve(job) if in_tasks else self.executor.reserve(job)
        if not reserved:
            self.recorder.record(
                job.id,
                [request.requested_at],
                Execution.Status.SKIPPED,
                "Skipped: the job was already running (max_instances reached)",
                origin,
            )
            self._taken(request)
            return
        try:
            execution = self.recorder.start(
                job.id,
                request.requested_at,
                origin,
                ran_in=Placement.of(job.executor).kind,
                call=frozen(job) if in_tasks else None,
            )
        except BaseException:
            if not in_tasks:
                self.executor.release(job)
            raise
        if not self._taken(request) or execution is None:
            # Already recorded (and run) by another scheduler, or taken by one meanwhile.
            if not in_tasks:
                self.executor.release(job)
            return
        logger.info("Running job %s now, as requested by %s", job.id, request.requested_by or "a script")
        if in_tasks:
            self.dispatcher.handoff.submit(job, [execution])
        else:
            self.executor.submit_recorded(job, [execution], origin)

    @staticmethod
    def _taken(request: RunRequest) -> bool:
        # Deleting is claiming: only the process whose DELETE removed the row runs it.
        return bool(RunRequest.objects.filter(pk=request.pk).delete()[0])

    def _beat_if_due(self, housekeeping: bool = True) -> None:
        if time.monotonic() - self._last_beat < settings.HEARTBEAT_INTERVAL:
            return
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(last_beat=timezone.now())
        self._last_beat = time.monotonic()
        if not housekeeping:
            return
        history.recover_interrupted()
        if self.active and self.executor.elsewhere:
            self.executor.elsewhere = history.running_elsewhere(self.instance)
        if self.active:
            history.expire_task_runs()
