"""The measured scenarios, each run inside a fresh worker process for one system.

- ``load``: N jobs fire every second for a window of whole seconds; lateness of each run, runs
  that happened, were recorded as missed, or left no trace at all; SQL statements per run.
- ``burst``: N jobs all due at one moment (written to the store beforehand, the same way for both
  systems); lateness, executions per second until the last outcome is in the history, SQL per run.
- ``startup``: N jobs due in an hour declared (ours) or added (stock); time from process spawn to
  all jobs scheduled, then CPU, statements per second and memory while idle.
- ``mix``: ours only, the chaos suite's job mix at N jobs with its timings and no faults;
  statements per dispatch pass, by kind and table, and what fencing costs of them.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.interval import IntervalTrigger
from django_apscheduler.models import DjangoJob

from bench import jobs
from bench.measure import (
    LEASE_TABLE,
    PassCounter,
    SqlCounter,
    cpu_seconds,
    memory_mb,
    sleep_until,
    total,
    with_begins,
)
from bench.systems import GRACE, System

SETTLE_SECONDS = 2.0  # after a window, for its last runs to start and be recorded


def at(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def lateness_stats(latenesses: list[float]) -> dict[str, float | None]:
    if not latenesses:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(latenesses)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def per_run(counts: collections.Counter[str], runs: int) -> dict[str, Any]:
    if not runs:
        return {"total": None, "kinds": {}}
    counts = with_begins(counts)
    return {
        "total": total(counts) / runs,
        "kinds": {kind: round(n / runs, 3) for kind, n in sorted(counts.items())},
    }


def fates(system: System, count: int, since: float, until: float, expected: int) -> dict[str, Any]:
    """What became of each fire due in [since, until): ran, recorded as not run, or vanished."""
    window = [mark for mark in jobs.marks if since <= mark[1] < until]
    ran = {(job_id, scheduled) for job_id, scheduled, _ in window}
    late = [started - scheduled for _, scheduled, started in window]
    recorded = system.outcomes(at(since), at(until))
    not_run = sum(n for status, n in recorded.items() if status not in {"ran", "running"})
    on_time = sum(1 for lateness in late if lateness <= GRACE[system.name])
    return {
        "expected": expected,
        "ran": len(ran),
        "on_time": on_time,
        "recorded_not_run": {k: v for k, v in recorded.items() if k not in {"ran", "running"}},
        "vanished": max(expected - len(ran) - not_run, 0),
        "lateness": lateness_stats(late),
    }


def load(system: System, counter: SqlCounter, count: int, seconds: int) -> dict[str, Any]:
    system.start(count, "second")
    since = math.ceil(time.time()) + 1
    until = since + seconds
    sleep_until(since)
    before = counter.snapshot()
    sleep_until(until)
    counts = counter.snapshot() - before
    time.sleep(SETTLE_SECONDS)
    alive = system.alive()
    system.stop()
    outcome = fates(system, count, since, until, count * seconds)
    return {
        "alive_at_end": alive,
        "locked_errors": counter.locked_errors,
        "sql_per_fire": per_run(counts, handled(outcome)),
        "window_seconds": seconds,
        **outcome,
    }


def handled(outcome: dict[str, Any]) -> int:
    """Fires a scheduler dealt with: ran, or recorded as missed or skipped (each costs SQL)."""
    return int(outcome["ran"]) + sum(outcome["recorded_not_run"].values())


def prefill(system_name: str, count: int, due: float, any_delay: bool) -> None:
    """Write N jobs due at ``due`` into the store directly, one INSERT per 1,000 rows.

    ``any_delay``: no misfire grace time, so every fire runs however late (the throughput
    measure); otherwise each system's default grace (the "all run or are recorded" measure).
    """
    trigger = IntervalTrigger(hours=1, start_date=at(due), timezone=UTC)
    rows = []
    for number in range(count):
        job_id = f"bench.{number}"
        job = Job(
            None,
            id=job_id,
            func=jobs.tick,
            trigger=trigger,
            executor="default",
            args=(job_id,),
            kwargs={},
            name="tick",
            misfire_grace_time=None if any_delay else GRACE[system_name],
            coalesce=True,
            max_instances=1,
        )
        job.next_run_time = at(due)
        state = pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)
        rows.append(DjangoJob(id=job_id, next_run_time=at(due), job_state=state))
    DjangoJob.objects.bulk_create(rows, batch_size=1000)


def burst(
    system: System, counter: SqlCounter, count: int, lead: float, timeout: float, any_delay: bool
) -> dict[str, Any]:
    # Started on an empty store, so that its start-up is not part of the dispatch measured here;
    # the jobs are then written as another process would, and the scheduler told (stock only
    # needs it: it sleeps until its own next wake-up, which an empty store leaves unset).
    system.start(0, "hourly")
    before = counter.snapshot()
    due = math.ceil(time.time() + lead)
    prefill(system.name, count, due, any_delay)
    ready = time.time()
    system.nudge()
    deadline = due + timeout
    # Everything either ran or was recorded as not run, and every run's outcome is on disk.
    while time.time() < deadline:
        time.sleep(0.5)
        recorded = system.outcomes(at(due), at(due + 1))
        if len(jobs.marks) + sum(n for k, n in recorded.items() if k not in {"ran", "running"}) >= count and (
            recorded.get("ran", 0) >= len(jobs.marks)
        ):
            break
    counts = counter.snapshot() - before
    alive = system.alive()
    system.stop()
    finished = system.finished()
    span = max(finished) - due if finished else None
    outcome = fates(system, count, due, due + 1, count)
    return {
        "written_before_due": ready < due,
        "alive_at_end": alive,
        "timed_out": time.time() >= deadline,
        "executions_per_second": len(finished) / span if span else None,
        "history_rows": len(finished),
        "sql_per_fire": per_run(counts, handled(outcome)),
        **outcome,
    }


def startup(
    system: System, counter: SqlCounter, count: int, spawned: float, idle_seconds: float
) -> dict[str, Any]:
    system.start(count, "hourly")
    ready = time.time()
    if started := os.environ.get("BENCH_STARTED_FILE"):
        Path(started).touch()  # bench/run.py bounds the start-up alone, not the idle time after it
    result: dict[str, Any] = {"startup_seconds": ready - spawned}
    if idle_seconds:
        # Let the start-up's own work (a first heartbeat, history recovery) pass first.
        time.sleep(2)
        before, cpu = counter.snapshot(), cpu_seconds()
        time.sleep(idle_seconds)
        counts = counter.snapshot() - before
        result["idle_cpu_percent"] = (cpu_seconds() - cpu) / idle_seconds * 100
        result["idle_queries_per_second"] = total(counts) / idle_seconds
        kinds = with_begins(counts).items()
        result["idle_kinds"] = {kind: round(n / idle_seconds, 2) for kind, n in sorted(kinds)}
    result["rss_mb"] = memory_mb()
    result["alive_at_end"] = system.alive()
    system.stop()
    return result


def mix(system: System, counter: SqlCounter, passes: PassCounter, count: int, seconds: int) -> dict[str, Any]:
    """The chaos mix, faults off: statements per pass, and those that exist only for fencing.

    Fencing adds no statement to a write: the condition is inside it (``… AND EXISTS (SELECT …
    scheduling_lease …)``), so such writes are counted as ``(fenced)`` but cost nothing extra. What
    it does add is the lease's own traffic, every ``SCHEDULING_LEASE_RENEW_INTERVAL``: counted
    here as the statements on ``scheduling_lease`` itself, per pass and per second.
    """
    system.start(count, "mix")
    since = math.ceil(time.time()) + 1
    until = since + seconds
    sleep_until(since)
    before, targets, passes_before = counter.snapshot(), counter.snapshot_targets(), passes.passes
    sleep_until(until)
    counts, targets = counter.snapshot() - before, counter.snapshot_targets() - targets
    dispatched = passes.passes - passes_before
    time.sleep(SETTLE_SECONDS)
    alive = system.alive()
    system.stop()
    window = [mark for mark in jobs.marks if since <= mark[1] < until]
    lease = sum(n for target, n in targets.items() if target.endswith(f" {LEASE_TABLE}"))
    fenced = sum(n for target, n in targets.items() if target.endswith("(fenced)"))
    each = max(dispatched, 1)
    return {
        "alive_at_end": alive,
        "window_seconds": seconds,
        "passes": dispatched,
        "ran": len(window),
        "lateness": lateness_stats([started - scheduled for _, scheduled, started in window]),
        "statements_per_pass": total(counts) / each,
        "kinds_per_pass": {kind: round(n / each, 3) for kind, n in sorted(with_begins(counts).items())},
        "targets_per_pass": {target: round(n / each, 3) for target, n in sorted(targets.items())},
        "lease_per_pass": lease / each,
        "lease_per_second": lease / seconds,
        "fenced_writes_per_pass": fenced / each,
    }
