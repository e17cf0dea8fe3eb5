"""The scheduler's job threads: up to max_workers threads taking runs from one queue.

``concurrent.futures.ThreadPoolExecutor`` pays, for each call, a future, its done-callbacks and
a round on a semaphore that every idle thread and the submitting thread share: to start 1,000
runs due together, 13 ms on this project's 2-core machine, against 3.5 ms here, where a thread
that finds the queue non-empty takes the next run without a lock.

Only the interpreter's lock lets a thread run Python, so runs that do not block gain nothing
from more threads and lose much: ten threads taking turns through a queue of 1,000 short runs
each wait for the lock, then for one another's locks while preempted, and started them 2-3 times
slower than two (10,000 due at once: p99 0.9 s with two threads, 1.4 s with ten). So while runs
are queued, ``CONCURRENT`` threads take them, and one more joins whenever ``STALL`` passes with
runs still queued and none of those going on ending: they wait on I/O, sleep or compute. The
judge is progress, not how long a run has gone on: a run waiting for the interpreter's lock
behind the others looks as long as one waiting on the network. One waiting thread (the watcher)
looks every ``STALL`` while runs are queued; the others sleep until called. A pause of the whole
interpreter (a collection, another thread holding its lock) looks like a stall too, so a thread
let in beyond ``CONCURRENT`` goes back to wait once runs flow again.

A run's slot and its outcome are the caller's business (see scheduling.runs.threads); this module
only runs callables. The threads are daemons: a run still going past the scheduler's shutdown
timeout is recorded interrupted, and must not keep the process alive (``runscheduler`` ends it
either way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CONCURRENT = 2  # threads taking queued runs at once while those going on keep ending
STALL = 0.002  # seconds with runs queued and none ending, after which one more thread joins


@dataclass(eq=False)
class _Worker:
    number: int
    woken: threading.Event = field(default_factory=threading.Event)
    called: bool = False  # woken or started for queued runs, and not yet looked at them
    taking: bool = False  # admitted: takes queued runs one after the other until none is left


class RunPool:
    def __init__(self, max_workers: int, name: str, stall: float = STALL) -> None:
        self.max_workers = max_workers
        self.name = name
        self.stall = stall
        self._work: deque[Callable[[], object]] = deque()
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._parked: list[_Worker] = []  # threads waiting for work, each on its own event
        self._watcher: _Worker | None = None  # the parked thread that looks every stall
        self._taking = 0  # threads admitted to take queued runs
        self._called = 0  # threads woken or started for queued runs, not yet at them
        self._ended = 0  # calls ended, ever: the watcher's measure of progress
        self._unfinished = 0  # calls queued or going on
        self._closed = False

    def submit(self, call: Callable[[], object]) -> bool:
        """Queue ``call`` for the next free thread; False once shut down (nothing queued)."""
        with self._lock:
            if self._closed:
                return False
            self._unfinished += 1
            self._work.append(call)
            if self._taking + self._called < CONCURRENT:
                self._wake_or_start()
            elif self._watcher is None:
                self._watcher = self._wake_or_start()
        return True

    def start_all(self) -> None:
        """Start every thread now, not as the first runs come (each would wait for one)."""
        with self._lock:
            while not self._closed and len(self._threads) < self.max_workers:
                self._start_thread(called=False)

    def wait(self, timeout: float) -> bool:
        """Wait for the calls queued and going on; True if all ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._all_done.wait(left)
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Take no more calls; those queued still run. With ``wait``, return once all ended."""
        with self._lock:
            self._closed = True
            for worker in self._parked:
                worker.woken.set()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def unfinished(self) -> int:
        """Calls queued or going on."""
        return self._unfinished

    def _wake_or_start(self) -> _Worker | None:
        """Call a parked thread, or start one, for the queued runs (with the lock held)."""
        if self._parked:
            worker = self._parked.pop()
            worker.called = True
            self._called += 1
            worker.woken.set()
            return worker
        if len(self._threads) < self.max_workers:
            return self._start_thread(called=True)
        return None

    def _start_thread(self, called: bool) -> _Worker:
        worker = _Worker(len(self._threads), called=called)
        self._called += called
        thread = threading.Thread(
            target=self._work_on, args=(worker,), name=f"{self.name}_{worker.number}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return worker

    def _work_on(self, worker: _Worker) -> None:
        while self._park(worker):
            leave = False
            while not leave:
                try:
                    # No lock while there is work: deque.popleft is atomic.
                    call = self._work.popleft()
                except IndexError:
                    break
                ended = self._ended
                try:
                    call()
                # The caller's own handling failed: logged, and the thread goes on with the next.
                except Exception:
                    logger.exception("A run ended in an error of the scheduler")
                finally:
                    with self._lock:
                        self._ended += 1
                        self._unfinished -= 1
                        if not self._unfinished:
                            self._all_done.notify_all()
                        # Runs flow again (the others ended more than there are threads taking,
                        # while this one went on): a thread beyond CONCURRENT, let in during a
                        # stall that was only a pause (a collection, the outcome writer holding
                        # the interpreter), goes back to wait; the watcher lets one in again if
                        # runs stall anew. Staying, it took turns with the others to the end.
                        leave = self._taking > CONCURRENT and self._ended - ended > self._taking
                        if leave:
                            worker.taking = False
                            self._taking -= 1

    def _park(self, worker: _Worker) -> bool:
        """Wait until this thread may take queued runs; False once shut down with none left."""
        with self._lock:
            if worker.taking:
                worker.taking = False
                self._taking -= 1
            stuck = False  # watched a whole stall with runs queued, and none ended
            while True:
                if worker.called:
                    worker.called = False
                    self._called -= 1
                if self._watcher is worker:
                    self._watcher = None
                if self._work and (stuck or self._taking + self._called < CONCURRENT):
                    worker.taking = True
                    self._taking += 1
                    if len(self._work) > 1 and self._watcher is None:
                        # Runs stay queued after the one this thread takes: another watches.
                        self._watcher = self._wake_or_start()
                    return True
                if self._closed and not self._work:
                    return False
                self._parked.append(worker)
                watching = bool(self._work) and self._watcher is None
                if watching:
                    self._watcher = worker
                ended = self._ended
                worker.woken.clear()
                self._lock.release()
                try:
                    # Once shut down, every thread looks again each stall: none is left waiting
                    # for a call that no submit will make once the queue runs dry.
                    worker.woken.wait(self.stall if watching or self._closed else None)
                finally:
                    self._lock.acquire()
                stuck = False
                if worker in self._parked:  # not called by another: it looks again itself
                    self._parked.remove(worker)
                    stuck = watching and self._ended == ended
