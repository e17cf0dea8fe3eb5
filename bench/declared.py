"""Our side's job declarations, generated from the environment (``BENCH_JOBS``, ``BENCH_SCHEDULE``).

``second``: every job fires every second (cron ``second=*``, like the stock pattern's
``CronTrigger(second="*/1")``); ``hourly``: every job is due in an hour (the idle and start-up
measures); ``mix``: the chaos suite's job mix (tests/support/chaos_jobs.py) scaled to N jobs, in its
proportions of every-second jobs (50), jittered jobs every 2 s (5) and jobs whose first attempt
fails and is retried (3). Its slow (4 s, ``max_instances=1``) and locked jobs are left out: at
1,000 jobs they would hold every thread of the pool, and measure the pool rather than a pass.
Nothing is declared when ``BENCH_JOBS`` is unset (the admin process, pre-filled stores).
"""

from __future__ import annotations

import math
import os
from typing import Any

from bench.jobs import fail_first_attempt, tick
from scheduling import job

SCHEDULES: dict[str, dict[str, Any]] = {
    "second": {"cron": {"second": "*"}},
    "hourly": {"interval": {"hours": 1}},
}
# The chaos suite's counts of each kind (tests/support/chaos.py: EVERY_JOBS, JITTER_JOBS, RETRY_JOBS).
MIX = {"every": 50, "jitter": 5, "retry": 3}


def declare_mix(count: int) -> None:
    retries = math.ceil(count * MIX["retry"] / sum(MIX.values()))
    jittered = math.ceil(count * MIX["jitter"] / sum(MIX.values()))
    for number in range(count):
        job_id = f"bench.{number}"
        if number < retries:
            job(
                id=job_id,
                args=[job_id],
                interval={"seconds": 2},
                retries=1,
                retry_backoff=1,
                retry_on=[ConnectionError],
            )(fail_first_attempt)
        elif number < retries + jittered:
            job(id=job_id, args=[job_id], cron={"second": "*/2"}, jitter=1)(tick)
        else:
            job(id=job_id, args=[job_id], interval={"seconds": 1})(tick)


def declare(count: int, schedule: str) -> None:
    if schedule == "mix":
        declare_mix(count)
        return
    for number in range(count):
        job_id = f"bench.{number}"
        job(id=job_id, args=[job_id], **SCHEDULES[schedule])(tick)


declare(int(os.environ.get("BENCH_JOBS", "0")), os.environ.get("BENCH_SCHEDULE", "second"))
