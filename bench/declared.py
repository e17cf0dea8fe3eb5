"""Our side's job declarations, generated from the environment (``BENCH_JOBS``, ``BENCH_SCHEDULE``).

``second``: every job fires every second (cron ``second=*``, like the stock pattern's
``CronTrigger(second="*/1")``); ``hourly``: every job is due in an hour (the idle and start-up
measures). Nothing is declared when ``BENCH_JOBS`` is unset (the admin process, pre-filled stores).
"""

from __future__ import annotations

import os
from typing import Any

from bench.jobs import tick
from scheduling import job

SCHEDULES: dict[str, dict[str, Any]] = {
    "second": {"cron": {"second": "*"}},
    "hourly": {"interval": {"hours": 1}},
}

for number in range(int(os.environ.get("BENCH_JOBS", "0"))):
    job_id = f"bench.{number}"
    job(id=job_id, args=[job_id], **SCHEDULES[os.environ.get("BENCH_SCHEDULE", "second")])(tick)
