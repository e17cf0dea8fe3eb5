"""What runs inside a child of the process pool (see scheduling.runs.processes).

A spawned child unpickles references to these functions before Django is set up, so this module
imports nothing from Django or from the app at import time.

A child dies with its scheduler. Otherwise a scheduler killed with SIGKILL (or by the OOM killer)
leaves its children running the job, reparented to init, while the next scheduler records the run
interrupted and starts later fires: code runs that the history says stopped. Two guards:

- On Linux, ``PR_SET_PDEATHSIG``: the kernel sends the child SIGKILL when the *thread* that spawned
  it ends, even while the job holds the GIL in C code. ``ProcessPool`` spawns every child from one
  thread that lives as long as the pool, so that moment is the scheduler's death or the pool's end.
- Everywhere, a watchdog thread on multiprocessing's parent sentinel, a pipe whose other end only
  the scheduler holds: it reads end-of-file once the scheduler is gone, including if it died before
  the ``prctl`` call took effect.

multiprocessing's resource tracker needs no guard: it exits when the last process holding its pipe
(the scheduler and these children) is gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduling.history.rows import Outcome
    from scheduling.models import Execution
    from scheduling.runs.observers import RunFacts


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_up() -> None:
    """Make SIGTERM end this child, tie the child's life to the scheduler's, then set Django up (a
    spawned child inherits DJANGO_SETTINGS_MODULE and sys.path only)."""
    # A spawned child inherits an ignored or blocked SIGTERM from the thread that started it
    # (a process manager, a library masking signals in its threads): then a run could only be
    # stopped with SIGKILL, and a job's own SIGTERM handler would never run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    die_with_parent()
    import django

    django.setup()


def die_with_parent() -> None:
    """End this process with SIGKILL as soon as the process that spawned it is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        raise RuntimeError("die_with_parent() must run in a process started by multiprocessing")
    threading.Thread(
        target=_kill_self_when_ready, args=(parent.sentinel,), name="scheduling-parent-watchdog", daemon=True
    ).start()


def _kill_self_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os.kill(os.getpid(), signal.SIGKILL)


READY = "ready"  # what a child sends once Django is set up


def serve(connection: multiprocessing.connection.Connection) -> None:
    """A child's life: set up, then run each call received and send back its outcome, until the
    scheduler closes its end of the pipe (or stops the child)."""
    set_up()
    connection.send(READY)
    while True:
        try:
            request = connection.recv()
        except EOFError:
            # The child's end: what Sentry holds is sent first (the outcome went already).
            from scheduling.runs.observers import flush

            flush()
            return
        connection.send(call(*request))


def call(
    job_id: str,
    func_ref: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    execution: Execution | None,
    facts: RunFacts | None = None,
) -> Outcome:
    """Call a job's function here, with fresh connections, and return its outcome."""
    from apscheduler.util import ref_to_obj
    from django.db import close_old_connections

    from scheduling import context
    from scheduling.runs.call import call_job

    close_old_connections()
    token = context.current.set(execution)
    try:
        try:
            function = ref_to_obj(func_ref)
        # A function that cannot be imported fails the run like any other error.
        except BaseException as exc:
            return call_job(job_id, _raise, (exc,), {}, facts)
        return call_job(job_id, function, args, kwargs, facts)
    finally:
        context.current.reset(token)
        close_old_connections()


def _raise(exc: BaseException) -> None:
    raise exc
