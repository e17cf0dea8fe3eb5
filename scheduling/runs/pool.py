"""The scheduler's job threads: a fixed number of threads taking runs from one queue.

``concurrent.futures.ThreadPoolExecutor`` pays, for each call, a future, its done-callbacks and
a round on a semaphore that every idle thread and the submitting thread share: to start 1,000
runs due together, 13 ms on this project's 2-core machine, against 3.5 ms here, where a thread
that finds the queue non-empty takes the next run without a lock. A run's slot and its outcome
are the caller's business (see scheduling.runs.threads); this module only runs callables.

The threads are daemons: a run still going past the scheduler's shutdown timeout is recorded
interrupted, and must not keep the process alive (``runscheduler`` ends it either way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)


class RunPool:
    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._work: deque[Callable[[], object]] = deque()
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        # Threads waiting for work and not yet woken for some: a second call queued before the
        # woken thread took the first starts another thread, so neither waits for the other.
        self._idle = 0
        self._unfinished = 0  # calls queued or going on
        self._closed = False

    def submit(self, call: Callable[[], object]) -> bool:
        """Queue ``call`` for the next free thread; False once shut down (nothing queued)."""
        with self._lock:
            if self._closed:
                return False
            self._unfinished += 1
            self._work.append(call)
            if self._idle:
                self._idle -= 1
                self._work_ready.notify()
            elif len(self._threads) < self.max_workers:
                self._start_thread()
        return True

    def start_all(self) -> None:
        """Start every thread now, not as the first runs come (each would wait for one)."""
        with self._lock:
            while not self._closed and len(self._threads) < self.max_workers:
                self._start_thread()

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
            self._work_ready.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def unfinished(self) -> int:
        """Calls queued or going on."""
        return self._unfinished

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work_on, name=f"{self.name}_{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work_on(self) -> None:
        while True:
            try:
                # No lock while there is work: deque.popleft is atomic.
                call = self._work.popleft()
            except IndexError:
                with self._lock:
                    if self._work:
                        continue
                    if self._closed:
                        return
                    self._idle += 1
                    self._work_ready.wait()
                continue
            try:
                call()
            # The caller's own handling failed: logged, and the thread goes on with the next run.
            except Exception:
                logger.exception("A run ended in an error of the scheduler")
            finally:
                with self._lock:
                    self._unfinished -= 1
                    if not self._unfinished:
                        self._all_done.notify_all()
