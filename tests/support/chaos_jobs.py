"""Jobs of the chaos run (tests/test_chaos.py); each run appends one line to SCHEDULING_CHAOS_TRACE.

- ``chaos.every.N``: every second, the load of the run (gaps and duplicates are judged on them);
- ``chaos.jitter.N``: every 2 s with a second of jitter, so that two schedulers serving the same
  slot compute different scheduled times and the unique constraint alone cannot stop a double run;
- ``chaos.slow.N``: 4 s runs, ``max_instances=1``, longer than the chaos lease: a take-over while
  one is running (a graceful stop, a frozen leader) must not start a second, overlapping run;
- ``chaos.retry.N``: every 2 s, the first attempt fails on purpose and is retried a second later:
  each attempt must run once, however the faults fall between the failure and its retry;
- ``chaos.locked.N``: every second, 0.6 s runs, all sharing one lock (the last with
  ``overlap="queue"``): no two of them may ever run at the same time, in whichever schedulers;
- ``chaos.queue.0``: every second, 2.5 s runs, ``max_instances=1``, ``overlap="queue"``: its queued
  fire, started by whichever scheduler leads when the run ends, must never overlap that run.
"""

import os
import time

from scheduling import current_run, job
from tests.support.chaos import (
    EVERY_JOBS,
    JITTER_JOBS,
    LOCK,
    LOCKED_JOBS,
    LOCKED_SECONDS,
    QUEUE_SECONDS,
    RETRY_JOBS,
    RETRY_PERIOD,
    SLOW_JOBS,
    SLOW_SECONDS,
)

TRACE = os.environ.get("SCHEDULING_CHAOS_TRACE", "")


def trace_run(path: str, seconds: float = 0.0) -> None:
    """Append ``job_id scheduled pid started ended execution_id attempt`` once the run's code is done.

    One ``write`` of less than 512 bytes on an O_APPEND descriptor: lines from concurrent
    processes never interleave, and a process killed mid-run leaves a whole line or none.
    """
    run = current_run()
    started = time.time()
    if seconds:
        time.sleep(seconds)
    assert run is not None
    scheduled = run.scheduled_at.isoformat()
    line = f"{run.job_id} {scheduled} {os.getpid()} {started:.6f} {time.time():.6f} {run.pk} {run.attempt}\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def fail_first_attempt(path: str) -> None:
    """Trace the run, then fail it if it is the fire's first attempt."""
    trace_run(path)
    run = current_run()
    if run is not None and run.attempt == 1:
        raise ConnectionError("the first attempt fails on purpose")


for number in range(EVERY_JOBS):
    job(interval={"seconds": 1}, id=f"chaos.every.{number}", args=[TRACE])(trace_run)
for number in range(JITTER_JOBS):
    job(cron={"second": "*/2"}, jitter=1, id=f"chaos.jitter.{number}", args=[TRACE])(trace_run)
for number in range(SLOW_JOBS):
    job(interval={"seconds": 1}, id=f"chaos.slow.{number}", args=[TRACE, SLOW_SECONDS], max_instances=1)(
        trace_run
    )
for number in range(RETRY_JOBS):
    job(
        interval={"seconds": RETRY_PERIOD},
        id=f"chaos.retry.{number}",
        args=[TRACE],
        retries=1,
        retry_backoff=1,
        retry_on=[ConnectionError],
    )(fail_first_attempt)
for number in range(LOCKED_JOBS):
    job(
        interval={"seconds": 1},
        id=f"chaos.locked.{number}",
        args=[TRACE, LOCKED_SECONDS],
        lock=LOCK,
        overlap="queue" if number == LOCKED_JOBS - 1 else "skip",
    )(trace_run)
job(
    interval={"seconds": 1},
    id="chaos.queue.0",
    args=[TRACE, QUEUE_SECONDS],
    max_instances=1,
    overlap="queue",
)(trace_run)
