"""Module-level functions that tests declare as jobs."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import signal
import sys
import time

from scheduling import current_run

calls: list[str] = []


def succeed() -> None:
    calls.append("succeed")


def fail() -> None:
    raise ValueError("this job fails on purpose")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_job() -> None:
    await asyncio.sleep(0.01)
    calls.append("async_job")


def mark(job_id: str, path: str) -> None:
    """Leave a trace of a run, outside the database, to count runs independently of the history.

    The trace names the fire: ``job_id@scheduled time``.
    """
    run = current_run()
    assert run is not None
    assert run.job_id == job_id
    with open(path, "a") as marks:
        marks.write(f"{job_id}@{run.scheduled_at.isoformat()}\n")


def remember_run() -> None:
    run = current_run()
    calls.append(f"{run.job_id}@{run.scheduled_at.isoformat()}" if run else "no run")


async def async_remember_run() -> None:
    remember_run()


def note_process(path: str) -> None:
    """Write which process ran this fire: ``pid scheduled-time``."""
    run = current_run()
    with open(path, "a") as notes:
        notes.write(f"{os.getpid()} {run.scheduled_at.isoformat() if run else '-'}\n")


def die() -> None:
    """End the process running the job at once, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def mark_process(job_id: str, path: str) -> None:
    """Like :func:`mark`, naming the process that ran the fire too: ``job_id@scheduled time pid``."""
    run = current_run()
    assert run is not None
    with open(path, "a") as marks:
        marks.write(f"{job_id}@{run.scheduled_at.isoformat()} {os.getpid()}\n")


def mark_process_and_parent(job_id: str, path: str) -> None:
    """Like :func:`mark_process`, with the parent process too: a worker that runs each task in a
    child (RQ's work horse, Celery's pool) is the parent of the process named on the run's row."""
    run = current_run()
    assert run is not None
    with open(path, "a") as marks:
        marks.write(f"{job_id}@{run.scheduled_at.isoformat()} {os.getpid()} {os.getppid()}\n")


def hold_gil(count: int) -> None:
    """CPU-bound work that holds the GIL throughout: one C-level loop that never yields it."""
    sum(range(count))


def note_and_sleep(path: str, seconds: float) -> None:
    """Write this process's id, then sleep: a long run whose process a test can look for."""
    with open(path, "w") as note:
        note.write(str(os.getpid()))
    time.sleep(seconds)


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    """Run until the test creates ``path``: a run whose end the test decides."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.05)


def sleep_then_write(started: str, finished: str, seconds: float) -> None:
    """Write this process's id to ``started``, sleep, then create ``finished``: a side effect that
    shows whether the run's code went on to its end."""
    with open(started, "w") as note:
        note.write(str(os.getpid()))
    time.sleep(seconds)
    with open(finished, "w") as note:
        note.write(str(os.getpid()))


def write_arguments(path: str, count: int = 1, *, label: str = "stored") -> None:
    """Write the arguments it was called with, as JSON, to see which ones a run used."""
    with open(path, "w") as out:
        json.dump({"path": path, "count": count, "label": label}, out)


def fail_until(path: str, failures: int, error: str = "ConnectionError") -> None:
    """Fail (raising the builtin exception ``error``) the first ``failures`` calls, then succeed;
    each call appends its pid to ``path``, so attempts are counted across processes."""
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")
    with open(path) as calls_so_far:
        count = len(calls_so_far.readlines())
    if count <= failures:
        raise getattr(builtins, error)(f"attempt {count} fails on purpose")


def stop_at_deadline(path: str) -> None:
    """A cooperative job: works in small steps until its timeout passes, then returns early."""
    run = current_run()
    assert run is not None
    with open(path, "a") as notes:
        notes.write("started\n")
    deadline = time.monotonic() + 60
    while not run.deadline_passed and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path, "a") as notes:
        notes.write(f"deadline passed: {run.deadline_passed}\n")


def stop_when_cancelled(path: str) -> None:
    """A cooperative job: works in small steps until someone cancels it (or a minute passes)."""
    run = current_run()
    assert run is not None
    with open(path, "a") as notes:
        notes.write(f"started {os.getpid()}\n")
    deadline = time.monotonic() + 60
    while not run.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path, "a") as notes:
        notes.write(f"cancel requested: {run.cancel_requested}\n")


def ignore_sigterm_and_sleep(path: str, seconds: float) -> None:
    """A job that SIGTERM cannot stop: only SIGKILL ends it early."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(path, "a") as notes:
        notes.write(f"started {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as notes:
        notes.write("finished\n")


def exit_on_sigterm(path: str, seconds: float) -> None:
    """A job that cleans up on SIGTERM the usual way: its handler calls sys.exit()."""
    import sys

    def leave(signum: int, frame: object) -> None:
        with open(path, "a") as notes:
            notes.write("cleaned up\n")
        sys.exit(1)

    signal.signal(signal.SIGTERM, leave)
    with open(path, "a") as notes:
        notes.write(f"started {os.getpid()}\n")
    time.sleep(seconds)


def talk(text: str, count: int = 1) -> None:
    """Print ``text`` to stdout and to stderr and log it as a warning, ``count`` times."""
    log = logging.getLogger("tests.support.jobs")
    for _ in range(count):
        print(f"stdout: {text}")
        print(f"stderr: {text}", file=sys.stderr)
        log.warning("logged: %s", text)


async def talk_async(text: str) -> None:
    """Log ``text`` from a coroutine (run on asgiref's event loop thread)."""
    await asyncio.sleep(0)
    logging.getLogger("tests.support.jobs").warning("logged by a coroutine: %s", text)


def talk_then_fail(text: str) -> None:
    """Log ``text``, then fail; the failure's traceback is logged by the scheduler, not the job."""
    logging.getLogger("tests.support.jobs").warning("about to fail: %s", text)
    raise ValueError(text)


def talk_binary() -> None:
    """Print what no database stores as text: a NUL and a lone surrogate (a file name decoded
    with surrogateescape)."""
    print("bytes: \x00 and " + b"\xff".decode("utf-8", "surrogateescape"))


def note_start(path: str) -> None:
    """Write when this run's code began and the fire it serves: ``start scheduled`` (epoch seconds)."""
    started = time.time()
    run = current_run()
    assert run is not None
    with open(path, "a") as notes:
        notes.write(f"{started!r} {run.scheduled_at.timestamp()!r}\n")
