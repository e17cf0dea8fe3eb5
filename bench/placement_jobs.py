"""BENCH_JOBS one-off jobs, all due at BENCH_DUE (an ISO time), placed in BENCH_RUNS_IN.

Each run does BENCH_WORK_LOOPS iterations of pure-Python arithmetic: a fixed amount of CPU work
(calibrated by the benchmark to take BENCH_WORK_MS alone), which needs the GIL throughout — what a
CPU-bound job does to the scheduler's threads.
"""

import os

from scheduling import job


def work(loops: int) -> int:
    total = 0
    for number in range(loops):
        total += number * number
    return total


if os.environ.get("BENCH_DUE"):
    runs_in = os.environ["BENCH_RUNS_IN"]
    # For runs in task workers: RQ or Celery as the backend "placed" (bench/placement_settings.py),
    # on the measurement's own queue on a shared broker (BENCH_TASK_QUEUE).
    tasks = runs_in == "tasks"
    queue = os.environ.get("BENCH_TASK_QUEUE", "default") if tasks else None
    backend = (
        ("default" if os.environ.get("BENCH_TASK_BACKEND", "db") == "db" else "placed") if tasks else None
    )
    for number in range(int(os.environ["BENCH_JOBS"])):
        job(
            date=os.environ["BENCH_DUE"],
            id=f"bench.{number}",
            runs_in=runs_in,
            args=[int(os.environ["BENCH_WORK_LOOPS"])],
            misfire_grace_time=None,
            task_backend=backend,
            task_queue=queue,
        )(work)
