"""Embedded mode: the scheduler inside the web server's processes (opt-in, SCHEDULING_EMBEDDED).

Every web process starts a Runner on its first request, in a background thread; the lease makes
exactly one of them active, the others stand by. Starting on the first request rather than at
import time matters: servers that load the application before forking their workers
(``gunicorn --preload``, uWSGI without ``lazy-apps``) would otherwise fork a process whose
scheduler threads do not exist in the children. A runner inherited through a fork is forgotten in
the child, which starts its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from scheduling.conf import settings
from scheduling.runtime.service import Runner

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_runner: Runner | None = None
_owner_pid: int | None = None


def start_on_first_request(sender: Any = None, **kwargs: Any) -> None:
    """A request_started receiver: start this process's runner once, without delaying the request."""
    global _runner, _owner_pid
    if _owner_pid == os.getpid():
        return
    with _lock:
        if _owner_pid == os.getpid():
            return
        _owner_pid = os.getpid()
        _runner = Runner(threads=settings.THREADS)
        threading.Thread(target=_start, args=(_runner,), name="scheduling-embedded", daemon=True).start()


def _start(runner: Runner) -> None:
    try:
        runner.start()
    # A scheduler that cannot start must not take the web process down with it; it says why.
    except Exception:
        logger.exception("The embedded scheduler of process %d could not start", os.getpid())
        return
    atexit.register(_stop, runner)


def _stop(runner: Runner) -> None:
    if runner.started and os.getpid() == _owner_pid:
        runner.stop(timeout=settings.SHUTDOWN_TIMEOUT)


def _forget_after_fork() -> None:
    # The child has none of the parent's threads, and a lock held by one of them at the fork
    # would stay held forever: start afresh on the child's first request.
    global _lock, _runner, _owner_pid
    _lock, _runner, _owner_pid = threading.Lock(), None, None


os.register_at_fork(after_in_child=_forget_after_fork)
