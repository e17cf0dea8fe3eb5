"""The job both systems run: it notes when it started and which fire it served.

Lateness is measured the same way for both systems, inside the job: start time minus the fire's
scheduled time. Ours tells the job its fire (``scheduling.current_run()``); for the stock
scheduler the fire is noted by a wrapper around APScheduler's ``run_job`` (bench/stock.py).
"""

from __future__ import annotations

import threading
import time

from scheduling import current_run

# (job id, scheduled time, start time), seconds since the epoch; list.append is atomic.
marks: list[tuple[str, float, float]] = []
# Stock runs: the fire each worker thread is serving, set by the run_job wrapper.
stock_fire = threading.local()


def tick(job_id: str) -> None:
    started = time.time()
    run = current_run()
    scheduled = run.scheduled_at.timestamp() if run is not None else getattr(stock_fire, "scheduled", 0.0)
    marks.append((job_id, scheduled, started))


def fail_first_attempt(job_id: str) -> None:
    """The chaos mix's retried job: noted like ``tick``, then its first attempt fails on purpose."""
    tick(job_id)
    run = current_run()
    if run is not None and run.attempt == 1:
        raise ConnectionError("the first attempt fails on purpose")
