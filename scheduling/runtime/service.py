"""The scheduler service: start-up, leadership, sync, run requests, heartbeat and shutdown.

Drivable from tests without a subprocess: ``Runner().start()`` ... ``runner.stop()``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.db import DatabaseError, connections, router
from django.utils import timezone

from scheduling import calendars, declarations, identity
from scheduling.conf import settings
from scheduling.fencing import FenceLost
from scheduling.history import alerts
from scheduling.history.housekeeping import (
    expire_task_runs,
    pending_work,
    recover_interrupted,
    running_elsewhere,
)
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Origin, describe_exception
from scheduling.history.writer import OutcomeWriter
from scheduling.models import Execution, RunRequest, SchedulerInstance, maintenance_in_force
from scheduling.placement import Placement, RunsIn
from scheduling.policy import DEFAULT as DEFAULT_POLICY
from scheduling.policy import RunPolicy
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime import memory
from scheduling.runtime.alert_watch import AlertWatch
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.leadership import Leadership
from scheduling.runtime.loop import Scheduler, drop_broken_connections
from scheduling.runtime.notifications import RUN_REQUESTS, ChangeListener, why_not_pushed
from scheduling.runtime.startup import check_database, check_sqlite_machines
from scheduling.store import JobStore, policies_of
from scheduling.sync import SyncReport, sync, sync_calendars

logger = logging.getLogger(__name__)

RUN_REQUESTS_PER_TICK = 100
ACTIVATION_RETRY_MAX = 60.0  # seconds between attempts to start scheduling after a failed one


class Runner:
    """One scheduler process: owns the store, the run targets, the loop and the heartbeat."""

    def __init__(
        self, *, threads: int | None = None, poll_interval: float | None = None, own_process: bool = False
    ) -> None:
        self.threads = threads or settings.THREADS
        # The process is the scheduler's alone (runscheduler), not a web process's: see memory.settle.
        self.own_process = own_process
        self.poll_interval = poll_interval or settings.POLL_INTERVAL
        self.started = False
        self.active = False
        self.stopping = False
        self.sync_report = SyncReport()
        self._last_beat = 0.0
        self._next_claim = 0.0
        self._activation_failures = 0
        self._leading = threading.Lock()
        # Set by a notification of a run request (and wherever one may have been missed): while
        # changes are pushed, the run requests are read only then.
        self._requests_notified = threading.Event()
        self.listener: ChangeListener | None = None
        self._why_polled = ""
        self._changes_shown = ""

    def start(self) -> None:
        check_database()
        check_sqlite_machines()
        # The triggers notify on the database the app's tables are written to, as routed.
        alias = router.db_for_write(RunRequest)
        self._why_polled = why_not_pushed(alias) or ""
        if not self._why_polled:
            self.listener = ChangeListener(self._changed, alias)
        self._changes_shown = self._changes()
        self.instance = SchedulerInstance.objects.create(
            hostname=socket.gethostname(), pid=os.getpid(), changes=self._changes_shown, **identity.fields()
        )
        self.leadership = Leadership(self.instance.pk)
        self._last_beat = time.monotonic()
        self.outcomes = OutcomeWriter()
        self.alert_watch = AlertWatch(leading=lambda: self.active, fence=lambda: self.leadership.fence)
        self.alert_watch.start()
        self.recorder = recorder = Recorder(self.instance, self.outcomes)
        self.processes = ProcessPool(settings.PROCESSES)
        self.thread_runs = ThreadTarget(recorder, max_workers=self.threads)
        # A run claimed ahead starts at its time only if this scheduler still leads then.
        self.thread_runs.holding.may_start = self._holds_lease
        self.store = store = JobStore()
        self.dispatcher = Dispatcher(store, recorder, run_targets(self.thread_runs, self.processes))
        self.scheduler = Scheduler(
            poll_interval=self.poll_interval,
            on_tick=self._on_tick,
            may_dispatch=self._holds_lease,
            dispatcher=self.dispatcher,
            on_fence_lost=self._fence_lost,
            polls=lambda: not self._pushed(),
            housekeeping_interval=settings.LEASE_RENEW_INTERVAL,
            fire_ahead=settings.FIRE_AHEAD,
            jobstores={"default": store},
            timezone=timezone.get_default_timezone(),
            jobstore_retry_interval=settings.DATABASE_RETRY_MAX,
        )
        # Started paused: it schedules only while it holds the lease (see _lead).
        self.scheduler.start(paused=True)
        if self.listener is not None:
            self.listener.start()
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
        running = self.thread_runs.running
        if running:
            logger.info("Stopping: waiting up to %g s for %d running job(s)", timeout, running)
        self.scheduler.shutdown(wait=False)
        if self.listener is not None:
            self.listener.stop()
        # No new runs; those going on may end, and those claimed ahead start at their time if it
        # comes within the timeout (the lease is still held), else never.
        deadline = time.monotonic() + timeout
        self.thread_runs.shutdown(wait=False, start_held_until=time.time() + timeout)
        finished = self._wait_holding_lease(max(deadline - time.monotonic(), 0))
        self.processes.shutdown(wait=finished)
        # The outcomes of the runs that ended go to disk before the rest are marked interrupted.
        self.outcomes.stop()
        self.alert_watch.stop()
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
            if self.thread_runs.wait(step):
                return True
            if time.monotonic() >= deadline:
                return False
            try:
                self.thread_runs.check()
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
        # Runs go on whether or not this scheduler still leads: a step-down does not stop them.
        self.thread_runs.check()
        self.thread_runs.record_not_started()
        if self.stopping:
            return  # Runner.stop releases the lease and records the rest: nothing to lead any more
        self._lead()
        self._beat_if_due()
        self._show_changes()
        if self.active and self._run_requests_may_wait():
            try:
                self._take_run_requests()
            except BaseException:
                self._requests_notified.set()  # read them again at the next tick
                raise

    def _pushed(self) -> bool:
        return self.listener is not None and self.listener.pushed

    def _changed(self, channel: str) -> None:
        """What the listener calls, from its thread, for each change notified."""
        if channel == RUN_REQUESTS:
            self._requests_notified.set()
        # A job stored, a retry set, the pause changed: the loop looks for due jobs at once
        # (and a run request is taken at that tick).
        self.scheduler.wakeup()

    def _run_requests_may_wait(self) -> bool:
        """Read the run requests at every tick while changes are polled; when told, while pushed."""
        if not self._pushed():
            return True
        if not self._requests_notified.is_set():
            return False
        self._requests_notified.clear()
        return True

    def _changes(self) -> str:
        if self._pushed():
            return "pushed (LISTEN/NOTIFY)"
        why = self.listener.why_polled if self.listener is not None else self._why_polled
        return f"polled every {self.poll_interval:g} s ({why})"

    def _show_changes(self) -> None:
        """Write how changes are seen into this scheduler's row when that changed (rarely)."""
        changes = self._changes()
        if changes != self._changes_shown:
            SchedulerInstance.objects.filter(pk=self.instance.pk).update(changes=changes)
            self._changes_shown = changes

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
        recover_interrupted()
        self.thread_runs.elsewhere = running_elsewhere(self.instance)
        self.thread_runs.warm_up()
        self.recorder.fence = self.leadership.fence
        sync_calendars(calendars.registry.values(), declarations.registry.values())
        self.sync_report = sync(self.store, declarations.registry.values(), keep=self._keep_lease)
        memory.settle(freeze=self.own_process)  # what the sync loaded and wrote, freed, would stay resident
        if any(
            Placement.of(item.executor).runs_in == RunsIn.PROCESSES for item in declarations.registry.values()
        ):
            self.processes.warm_up()
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(
            role=SchedulerInstance.Role.ACTIVE, standby_reason=""
        )
        self.active = True
        self._activation_failures = 0
        self._requests_notified.set()  # made while this scheduler stood by, and not read since
        self.scheduler.resume()
        logger.info(
            "Scheduler %s holds the lease (epoch %d): it schedules and runs jobs",
            self.instance,
            self.leadership.fence.epoch if self.leadership.fence else 0,
        )

    def _keep_lease(self) -> None:
        """Renew the lease during a long step of taking over (the first sync of 100,000 jobs
        outlasts it): the loop that renews it is the one taking over.

        :raises FenceLost: the lease was lost meanwhile; taking over stops.
        """
        if time.monotonic() < self._next_claim:
            return
        self._next_claim = time.monotonic() + settings.LEASE_RENEW_INTERVAL
        fence = self.leadership.fence
        if fence is not None and not self.leadership.claim():
            raise FenceLost(fence, "sync the declared jobs")

    def _activation_failed(self, exc: Exception) -> None:
        message, _ = describe_exception(exc)
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
        # Claimed ahead while this scheduler led, not started yet: they never start now.
        self.thread_runs.drop_held(f"Interrupted: not started: the scheduler stepped down ({reason})")
        logger.warning("Scheduler %s stopped scheduling: %s; standing by", self.instance, reason)
        SchedulerInstance.objects.filter(pk=self.instance.pk).update(role=SchedulerInstance.Role.STANDBY)

    def _take_run_requests(self) -> None:
        requests = list(RunRequest.objects.all()[:RUN_REQUESTS_PER_TICK])
        if len(requests) == RUN_REQUESTS_PER_TICK:
            self._requests_notified.set()  # more may wait: read again at the next tick
        # Read only when there are requests: an idle tick costs no statement for it.
        pause = maintenance_in_force() if requests else None
        policies = policies_of({request.job_id for request in requests}) if requests else {}
        for request in requests:
            # A request made before the pause began got through without force: it is not run.
            skip = pause.skip_message if pause is not None and not request.force else None
            self._run_requested(request, skip, policies.get(request.job_id, DEFAULT_POLICY))

    def _run_requested(
        self, request: RunRequest, skip: str | None = None, policy: RunPolicy = DEFAULT_POLICY
    ) -> None:
        origin = Origin(Execution.Origin.MANUAL, request.requested_by, request.args, request.kwargs)
        try:
            job = self.store.lookup_job(request.job_id)
        # Loading imports the job's function: any error means it cannot run now.
        except Exception as exc:
            message, _ = describe_exception(exc)
            self.recorder.record_not_run(
                request.job_id, [request.requested_at], Execution.Status.FAILED, message, origin
            )
            self._taken(request)
            return
        if job is None:
            logger.warning("Dropped a request to run %s: no such job in the store", request.job_id)
            self._taken(request)
            return
        # Its pending retries and queued fires hold max_instances slots, as for its scheduled
        # fires, whatever its policy says now (retries set to 0 leaves a pending one pending).
        waiting = Execution.objects.awaiting_retry().filter(job_id=job.id).count()
        self.dispatcher.run_requested(
            job, request.requested_at, origin, lambda: self._taken(request), skip, policy, waiting
        )

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
        pending = pending_work(self.instance, self.active)
        if pending.orphans:
            recover_interrupted()
        if self.active and self.thread_runs.elsewhere:
            self.thread_runs.elsewhere = running_elsewhere(self.instance)
        if self.active and pending.task_runs:
            expire_task_runs()
        if pending.alerts:
            alerts.delivery_due.set()  # the alert thread's look: recoveries and sends
