"""What the machine itself allows: the floor under each group of measures, in a fresh process.

``python -m bench.limits --history 100,1000 --store 10000 --out FILE``:

- one empty round trip (``SELECT 1``), the median of many;
- one INSERT of N history rows into ``scheduling_execution``, a single multi-row statement in one
  transaction: the least the database needs to put N runs on disk (the scheduler's own INSERT of
  a pass is one such statement);
- the bare hand-off of N no-op calls to the scheduler's own job threads (``RunPool``, warmed, of
  ``SCHEDULING_THREADS``), from the first submit to the last call done: the least it takes to
  start N runs, with no database and no bookkeeping (``ThreadPoolExecutor`` takes 3-4 times as
  long: scheduling.runs.pool);
- one INSERT of N job-store rows (``executemany``, each row a pickled job): the floor of a first
  start with N jobs, with the time to spawn Python and set Django up, and that bare process's
  resident memory (the floor of the idle memory measure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import django

ROUND_TRIPS = 50
REPEATS = 3  # each timed limit is the median of three
HISTORY_COLUMNS = (
    "job_id, status, origin, requested_by, scheduled_at, started_at, finished_at, duration, exception, "
    "traceback, ran_in, task_id, hostname, pid, attempt, attempts, queued, cancel_requested_by"
)


def int_list(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def median_seconds(
    action: Callable[[], Any], repeats: int = REPEATS, reset: Callable[[], Any] | None = None
) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
        if reset is not None:
            reset()
    return statistics.median(timings)


def round_trip() -> float:
    from django.db import connection

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    select_one()  # connect first: the connection is not what is measured
    return median_seconds(select_one, ROUND_TRIPS)


def history_insert(count: int) -> float:
    """One multi-row INSERT of ``count`` history rows, committed. Values are literals: N rows of
    18 parameters would pass every database's limit on parameters per statement."""
    from django.db import connection, transaction

    moment = "'2000-01-01 00:00:00'"
    rows = ",".join(
        f"('limit.{n}', 'running', 'schedule', '', {moment}, {moment}, NULL, NULL, '', '', 'threads', '', "
        "'limit', 1, 1, 1, FALSE, '')"
        for n in range(count)
    )
    sql = f"INSERT INTO scheduling_execution ({HISTORY_COLUMNS}) VALUES {rows}"  # noqa: S608 - literals of ours

    def insert() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)

    def delete() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM scheduling_execution WHERE hostname = 'limit'")

    return median_seconds(insert, reset=delete)


def store_insert(count: int) -> float:
    """One ``executemany`` INSERT of ``count`` job-store rows, each with a job's pickled state."""
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.admin_views import job_state

    state, later = job_state(), timezone.now()
    rows = [(f"limit.{n}", later, state) for n in range(count)]

    def insert() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) VALUES (%s, %s, %s)",
                rows,
            )

    def delete() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_apscheduler_djangojob WHERE id LIKE 'limit.%%'")

    return median_seconds(insert, reset=delete)


def hand_off(count: int, workers: int) -> float:
    """``count`` no-op calls through the job threads' pool of ``workers``, all started beforehand."""
    from scheduling.runs.pool import RunPool  # once Django is set up

    pool = RunPool(workers, name="bench-limit")
    pool.start_all()
    try:

        def calls() -> None:
            for _ in range(count):
                pool.submit(int)
            pool.wait(60)

        return median_seconds(calls)
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int_list, default=[], help="sizes of the INSERT and hand-off")
    parser.add_argument("--store", type=int_list, default=[], help="sizes of the job-store INSERT")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    django.setup()
    from bench import database
    from bench.measure import memory_mb
    from scheduling.conf import settings

    result: dict[str, Any] = {"round_trip": round_trip()}
    # Spawned to set up and connected: the floor of a start-up and of the idle memory.
    spawned = float(os.environ["BENCH_SPAWNED_AT"])
    result["bare_process"] = {"seconds": time.time() - spawned, "rss_mb": memory_mb()}
    database.clear()
    result["threads"] = settings.THREADS
    result["history_insert"] = {str(n): history_insert(n) for n in args.history}
    result["hand_off"] = {str(n): hand_off(n, settings.THREADS) for n in args.history}
    result["store_insert"] = {str(n): store_insert(n) for n in args.store}
    database.clear()
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
