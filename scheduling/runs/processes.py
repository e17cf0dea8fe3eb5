"""The process pool, for CPU-bound jobs that would starve the scheduler's threads of the GIL.

A run in the pool is still supervised by one of the scheduler's threads, which records it, sends
its signals and waits for its outcome: only the call itself crosses into a child process. The
children are *spawned* (not forked: the scheduler is multi-threaded and holds open database
connections, which a forked child would share) and set Django up once; each run starts and ends
with ``close_old_connections()``, like a request.

Children die with the scheduler (see scheduling.runs.process_child). On Linux that rests on the kernel's
parent-death signal, which fires when the *thread* that spawned a child ends. ProcessPoolExecutor
spawns children lazily, in whichever thread calls ``submit()`` while fewer than ``max_workers``
are idle — here one of the scheduler's run threads, or the thread that activated the scheduler
(in embedded mode a thread that ends right after): a child would be killed mid-run when that
thread ended. So every ``submit()`` goes through the pool's launcher, one thread that lives exactly
as long as the pool.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any, TypeVar

from apscheduler.job import Job
from django.utils import timezone

from scheduling.history.rows import Origin, Outcome
from scheduling.models import Execution
from scheduling.placement import RunsIn
from scheduling.runs import process_child as child
from scheduling.runs.call import arguments_of
from scheduling.runs.threads import ThreadTarget

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ProcessPoolTarget:
    """The process pool as a run target: each run is supervised by one of the scheduler's threads,
    so it shares their accounting of max_instances, and only the call crosses into a child."""

    runs_in = RunsIn.PROCESSES

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

    def submit(self, job: Job, executions: list[Execution], origin: Origin) -> int:
        return self.threads.supervise(job, executions, origin, self._call)

    def _call(self, job: Job, execution: Execution | None) -> Outcome:
        return self.pool.call(job.id, job.func_ref, *arguments_of(job.args, job.kwargs, execution), execution)


class ProcessPool:
    """A pool of spawned Django processes, started on first use and replaced if a child dies."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._launcher = _launcher()
        self._lock = threading.Lock()

    def call(
        self,
        job_id: str,
        func_ref: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        execution: Execution | None,
    ) -> Outcome:
        """Run a job's function in a child process and return its outcome."""
        started_at = timezone.now()
        pool = self._get()
        try:
            return self._submit(
                pool, child.call, job_id, func_ref, tuple(args), dict(kwargs), execution
            ).result()
        except BrokenProcessPool as exc:
            # The child died (killed, out of memory, a crash in C code): the run failed, and the pool
            # is unusable for every later run until it is replaced.
            self._replace(pool)
            message = f"The process running the job died: {exc}"
            logger.error("Job %s: %s", job_id, message)
            return Outcome(Execution.Status.FAILED, started_at, timezone.now(), None, message)

    def warm_up(self) -> None:
        """Start the children now, so the first runs do not pay for Django's start-up."""
        pool = self._get()
        concurrent.futures.wait([self._submit(pool, child.ready) for _ in range(self.max_workers)])

    def shutdown(self, wait: bool = True) -> None:
        """Stop the children; without ``wait``, end the runs still going (their rows are recorded
        as interrupted by the runner), which would otherwise outlive the scheduler."""
        with self._lock:
            pool, self._pool = self._pool, None
            # A new launcher starts no thread until the pool is used again.
            launcher, self._launcher = self._launcher, _launcher()
        if pool is None:
            launcher.shutdown()
            return
        if not wait:
            # ProcessPoolExecutor has no public way to end running children before Python 3.14's
            # terminate_workers(); its _processes map is the same on 3.11 to 3.13.
            for child in list(getattr(pool, "_processes", {}).values()):
                child.terminate()
        pool.shutdown(wait=wait, cancel_futures=True)
        # Last: the children die with the launcher's thread (those still ending, at once).
        launcher.shutdown(wait=True)

    def _get(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.max_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=child.set_up,
                )
            return self._pool

    def _submit(
        self, pool: concurrent.futures.ProcessPoolExecutor, fn: Callable[..., T], *args: Any
    ) -> concurrent.futures.Future[T]:
        """``pool.submit()`` on the launcher's thread, the one thread that may spawn children."""
        return self._launcher.submit(pool.submit, fn, *args).result()

    def _replace(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)


def _launcher() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="scheduling-process-launcher"
    )
