"""The process pool, for CPU-bound jobs that would starve the scheduler's threads of the GIL, and
for runs that must stop at their timeout or when cancelled.

A run in the pool is still supervised by one of the scheduler's threads, which records it, sends
its signals and waits for its outcome: only the call itself crosses into a child process. The
children are *spawned* (not forked: the scheduler is multi-threaded and holds open database
connections, which a forked child would share) and set Django up once; each run starts and ends
with ``close_old_connections()``, like a request.

Each child runs one call at a time over a pipe of its own, so one run can be stopped without
touching the others: at its deadline (``timeout=``) or on a cancel, the child gets SIGTERM, then
SIGKILL if it has not ended ``STOP_GRACE`` seconds later, and a fresh child takes its place.
(``concurrent.futures.ProcessPoolExecutor`` cannot do that: killing one of its children breaks the
pool and fails every run in it.) The run's max_instances slot is freed only after the child is
gone, when the job's code can no longer be running.

Children die with the scheduler (see scheduling.runs.process_child). On Linux that rests on the
kernel's parent-death signal, which fires when the *thread* that spawned a child ends; children are
spawned in whichever thread needs one — a run thread, or the thread that activated the scheduler
(in embedded mode a thread that ends right after) — and would be killed mid-run when that thread
ended. So every child is spawned by the pool's launcher, one thread that lives exactly as long as
the pool.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from apscheduler.job import Job
from django.utils import timezone

from scheduling.history.rows import Origin, Outcome
from scheduling.models import Execution
from scheduling.placement import RunsIn
from scheduling.policy import RunPolicy
from scheduling.runs import process_child
from scheduling.runs.call import arguments_of
from scheduling.runs.live import LiveRun
from scheduling.runs.observers import RunFacts
from scheduling.runs.threads import RunAbandoned, ThreadTarget

logger = logging.getLogger(__name__)


class ProcessPoolTarget:
    """The process pool as a run target: each run is supervised by one of the scheduler's threads,
    so it shares their accounting of max_instances, and only the call crosses into a child."""

    runs_in = RunsIn.PROCESSES
    holds_runs = True  # the supervising threads hold them

    def __init__(self, threads: ThreadTarget, pool: ProcessPool) -> None:
        self.threads = threads
        self.pool = pool

    def count_busy(self, jobs: list[Job]) -> None:
        """Nothing to count: the supervising threads count the runs going on."""

    def reserve(self, job: Job, fires: int = 1, waiting: int = 0) -> int:
        return self.threads.reserve(job, fires, waiting)

    def release(self, job: Job) -> None:
        self.threads.release(job)

    def row(self, job: Job, scheduled_at: datetime, origin: Origin) -> Execution:
        return self.threads.recorder.running_row(job.id, scheduled_at, origin, ran_in=self.runs_in)

    def submit(self, job: Job, executions: list[Execution], origin: Origin, policy: RunPolicy) -> int:
        return self.threads.supervise(job, executions, origin, policy, self._call, stoppable=True)

    def _call(self, job: Job, execution: Execution, live: LiveRun, facts: RunFacts | None) -> Outcome:
        arguments = arguments_of(job.args, job.kwargs, execution)
        return self.pool.call(job.id, job.func_ref, *arguments, execution, live, facts)


STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a run is stopped
WATCH_INTERVAL = 0.25  # how often a supervising thread looks at its run's cancel flag


class ProcessPool:
    """Spawned Django processes, each running one call at a time, started on first use; a child
    that dies or is stopped is replaced by a fresh one."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._launcher = _launcher()
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._free = threading.Semaphore(max_workers)  # a child for each of max_workers runs at once
        # A pool left open at exit would make multiprocessing wait forever for its idle children.
        atexit.register(self.shutdown, wait=False)

    def call(
        self,
        job_id: str,
        func_ref: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        execution: Execution | None,
        live: LiveRun | None = None,
        facts: RunFacts | None = None,
    ) -> Outcome:
        """Run a job's function in a child process and return its outcome; with ``live``, stop
        the child at the run's deadline or when its cancel flag is raised. ``facts`` go with the
        call, for the observers in the child."""
        started_at = timezone.now()
        with self._free:
            try:
                child = self._take()
            except EOFError as exc:
                return self._failed(job_id, exc, started_at)
            if live is not None and live.cancel.is_set():
                # Cancelled while it waited for a child: it never starts.
                self._give_back(child)
                message = f"Cancelled by {live.cancelled_by or 'a script'} before it started"
                return Outcome(Execution.Status.CANCELLED, None, timezone.now(), None, message)
            if live is not None and live.timeout is not None:
                # Counted from when the code starts: not the wait for a child, nor a spawn.
                live.execution._deadline = time.monotonic() + live.timeout
            try:
                child.connection.send((job_id, func_ref, tuple(args), dict(kwargs), execution, facts))
                outcome = self._outcome(child, live)
            except (EOFError, OSError) as exc:
                with self._lock:
                    stopping = child not in self._children
                self._discard(child)
                if stopping:
                    # Ended by shutdown(wait=False): the runner records the run interrupted.
                    raise RunAbandoned(f"the process pool stopped while job {job_id} ran") from exc
                outcome = self._failed(job_id, exc, started_at)
            if outcome is not None or live is None:  # None only for a watched run to stop
                self._give_back(child)
                return outcome or self._failed(job_id, EOFError("no outcome"), started_at)
            return self._stopped(child, job_id, live, started_at)

    def warm_up(self) -> None:
        """Start the children now, so the first runs do not pay for Django's start-up."""
        with self._lock:
            missing = self.max_workers - len(self._children)
        spawned = [self._spawn() for _ in range(missing)]
        for child in spawned:
            if child.wait_ready():
                self._give_back(child)
            else:
                self._discard(child)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the children; without ``wait``, end the runs still going (their rows are recorded
        as interrupted by the runner), which would otherwise outlive the scheduler."""
        atexit.unregister(self.shutdown)
        with self._lock:
            children, idle = list(self._children), list(self._idle)
            self._children.clear()
            self._idle.clear()
            # A new launcher starts no thread until the pool is used again.
            launcher, self._launcher = self._launcher, _launcher()
        for child in children:
            if child in idle or not wait:
                child.close(terminate=child not in idle)
        for child in children:
            child.process.join(None if wait else STOP_GRACE)
            if child.process.is_alive():
                child.process.kill()
        # Last: the children die with the launcher's thread (those still ending, at once).
        launcher.shutdown(wait=True)

    def _take(self) -> _Child:
        while True:
            with self._lock:
                child = self._idle.pop() if self._idle else None
            if child is None:
                break
            if child.process.is_alive():
                return child
            self._discard(child)  # died while idle (the OOM killer, a kill by hand): not this run's fault
        child = self._spawn()
        if not child.wait_ready():
            self._discard(child)
            raise EOFError("the child process ended while Django was being set up")
        return child

    def _spawn(self) -> _Child:
        """A new child, started on the launcher's thread, the one thread that may spawn children."""
        with self._lock:
            launcher = self._launcher
        child = launcher.submit(_Child.spawn).result()
        with self._lock:
            self._children.add(child)
        return child

    def _give_back(self, child: _Child) -> None:
        with self._lock:
            if child in self._children:
                self._idle.append(child)
                return
        child.close()  # the pool was shut down meanwhile

    def _discard(self, child: _Child) -> None:
        with self._lock:
            self._children.discard(child)
        child.close(terminate=True)
        child.process.join(STOP_GRACE)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()

    def _outcome(self, child: _Child, live: LiveRun | None) -> Outcome | None:
        """The child's outcome; None when the run must be stopped first (deadline, cancel).

        :raises EOFError: the child died.
        """
        waiting_on: list[Connection | int] = [child.connection, child.process.sentinel]
        while True:
            step = WATCH_INTERVAL if live is not None else None
            if live is not None and live.deadline is not None:
                step = min(WATCH_INTERVAL, max(live.deadline - time.monotonic(), 0))
            ready = multiprocessing.connection.wait(waiting_on, timeout=step)
            if child.connection in ready:
                outcome: Outcome = child.connection.recv()
                return outcome
            if ready:
                raise EOFError(f"exit code {child.process.exitcode}")
            if live is not None and (live.cancel.is_set() or live.execution.deadline_passed):
                return None

    @staticmethod
    def _failed(job_id: str, exc: BaseException, started_at: datetime) -> Outcome:
        # Killed, out of memory, a crash in C code: the run failed; the next run gets a new child.
        message = f"The process running the job died: {exc or type(exc).__name__}"
        logger.error("Job %s: %s", job_id, message)
        return Outcome(Execution.Status.FAILED, started_at, timezone.now(), None, message)

    def _stopped(self, child: _Child, job_id: str, live: LiveRun, started_at: datetime) -> Outcome:
        killed = child.stop()
        with self._lock:
            self._children.discard(child)
        how = f" (with SIGKILL: it had not ended {STOP_GRACE:g} s after SIGTERM)" if killed else ""
        finished_at = timezone.now()
        if live.cancel.is_set():
            status = Execution.Status.CANCELLED
            message = f"Cancelled by {live.cancelled_by or 'a script'}: its process was stopped{how}"
        else:
            status = Execution.Status.TIMED_OUT
            message = f"Timed out: stopped after its timeout of {live.timeout} s{how}"
        logger.warning("Job %s: %s", job_id, message)
        return Outcome(status, started_at, finished_at, (finished_at - started_at).total_seconds(), message)


class _Child:
    """One spawned process and the parent's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection

    @classmethod
    def spawn(cls) -> _Child:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=process_child.serve, args=(theirs,), name="scheduling-process")
        process.start()
        theirs.close()
        return cls(process, ours)

    def wait_ready(self) -> bool:
        """Wait for the child to have set Django up; False if it died first."""
        try:
            return bool(self.connection.recv() == process_child.READY)
        except (EOFError, OSError):
            return False

    def stop(self) -> bool:
        """End the child: SIGTERM, then SIGKILL after STOP_GRACE; True if SIGKILL was needed.

        A job whose own SIGTERM handler ends it (``sys.exit()``) returns, and the child sends
        that outcome and would wait for the next call: it ended on SIGTERM, and is killed at once.
        """
        self.process.terminate()
        waiting_on: list[Connection | int] = [self.process.sentinel, self.connection]
        ready = multiprocessing.connection.wait(waiting_on, STOP_GRACE)
        if self.process.sentinel in ready:
            self.process.join()  # it is ending: reap it
        killed = not ready
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()
        return killed

    def close(self, terminate: bool = False) -> None:
        """Let an idle child end (its pipe closes: it reads end-of-file), or end it at once."""
        if terminate:
            self.process.terminate()
        self.connection.close()


def _launcher() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="scheduling-process-launcher"
    )
