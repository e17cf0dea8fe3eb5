"""The randomized fault suite: schedulers killed, frozen, redeployed, cut from their database.

3 ``runscheduler`` processes (2 on SQLite) share one database and 60 jobs (tests/support/chaos_jobs.py);
every 5-15 s a fault drawn from the seed hits them. At the end, every scheduler stopped cleanly,
the trace the jobs wrote and the history table must agree: no fire ran twice, every run has its
row, no row is left unfinished, no ``max_instances=1`` job ran twice at once, and every fire ran
unless a fault (plus the take-over allowance) excuses it. On PostgreSQL the run has a throwaway
cluster of its own, so that it can restart the server.

SCHEDULING_CHAOS_SEED replays a run (default: random, printed); SCHEDULING_CHAOS_SECONDS sets how
long the faults go on (default 75; ``make chaos`` runs 10 minutes).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from scheduling.models import Execution, Lease, SchedulerInstance
from tests import settings_chaos
from tests.conftest import ROOT, SchedulerProcess, wait_for
from tests.support import chaos
from tests.support.postgres_cluster import PostgresCluster

SECONDS = float(os.environ.get("SCHEDULING_CHAOS_SECONDS") or 75)
SEED = int(os.environ.get("SCHEDULING_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
# How long fires may go unrun after a fault: the lease runs out, a standby's next claim, its next
# pass, a heartbeat, the database retry's longest backoff, and one period of the jobs.
ALLOWANCE = (
    settings_chaos.SCHEDULING_LEASE_DURATION
    + settings_chaos.SCHEDULING_LEASE_RENEW_INTERVAL
    + settings_chaos.SCHEDULING_POLL_INTERVAL
    + settings_chaos.SCHEDULING_HEARTBEAT_INTERVAL
    + settings_chaos.SCHEDULING_DATABASE_RETRY_MAX
    + chaos.JITTER_PERIOD
)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


class DjangoDatabase:
    """The test database itself (SQLite, MariaDB), through Django's connection."""

    url: str | None = None  # the schedulers use the test database's own URL

    @property
    def kinds(self) -> list[str]:
        if connection.vendor == "sqlite":
            return [chaos.SIGKILL, chaos.SIGSTOP, chaos.DEPLOY]
        return [chaos.SIGKILL, chaos.SIGSTOP, chaos.DEPLOY, chaos.KILL_CONNECTIONS]

    def rows(self) -> list[chaos.Row]:
        values = Execution.objects.values_list("job_id", "scheduled_at", "status", "pid", "pk", "attempt")
        return [chaos.Row(job, chaos.epoch(at), status, pid, pk, n) for job, at, status, pid, pk, n in values]

    def leader_pid(self) -> int | None:
        holder = Lease.objects.filter(expires_at__gt=timezone.now()).values_list("holder", flat=True).first()
        if holder is None:
            return None
        return SchedulerInstance.objects.filter(pk=holder).values_list("pid", flat=True).first()

    def kill_connections(self) -> None:
        """MariaDB's KILL of every other connection to the test database."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            for (connection_id,) in cursor.fetchall():
                cursor.execute(f"KILL {int(connection_id)}")

    def restart(self, seconds: float) -> None:
        raise NotImplementedError("only the throwaway PostgreSQL cluster is restarted")


class ClusterDatabase(DjangoDatabase):
    """A throwaway PostgreSQL cluster of the run's own, which it may kill connections of and restart."""

    kinds = [chaos.SIGKILL, chaos.SIGSTOP, chaos.DEPLOY, chaos.KILL_CONNECTIONS, chaos.RESTART_DATABASE]

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.url = cluster.url

    def select(self, sql: str) -> list[tuple]:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.cluster.port} user=postgres dbname=scheduling"
        ) as db:
            return db.execute(sql).fetchall()

    def rows(self) -> list[chaos.Row]:
        values = self.select(
            "SELECT job_id, scheduled_at, status, pid, id, attempt FROM scheduling_execution"
        )
        return [chaos.Row(job, chaos.epoch(at), status, pid, pk, n) for job, at, status, pid, pk, n in values]

    def leader_pid(self) -> int | None:
        found = self.select(
            "SELECT i.pid FROM scheduling_lease l JOIN scheduling_schedulerinstance i ON i.id = l.holder "
            "WHERE l.expires_at > now()"
        )
        return found[0][0] if found else None

    def kill_connections(self) -> None:
        self.select(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'scheduling' AND pid <> pg_backend_pid()"
        )

    def restart(self, seconds: float) -> None:
        self.cluster.stop()
        time.sleep(seconds)  # the outage itself
        self.cluster.start()


@pytest.fixture
def database(transactional_db: None) -> Iterator[DjangoDatabase]:
    if connection.vendor != "postgresql":
        yield DjangoDatabase()
        return
    cluster = PostgresCluster()
    try:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_chaos", "DATABASE_URL": cluster.url}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
        )
        yield ClusterDatabase(cluster)
    finally:
        cluster.destroy()


class Schedulers:
    """The runscheduler processes of the run, each restarted in its place after a kill or a deploy."""

    def __init__(self, count: int, database: DjangoDatabase, directory: Path) -> None:
        self.env = {
            "DJANGO_SETTINGS_MODULE": "tests.settings_chaos",
            "SCHEDULING_CHAOS_TRACE": str(directory / "trace"),
            **({"DATABASE_URL": database.url} if database.url else {}),
        }
        self.directory = directory
        self.logs: dict[int, Path] = {}
        self.problems: list[str] = []
        self.processes = [self.start() for _ in range(count)]

    def start(self) -> SchedulerProcess:
        log = self.directory / f"scheduler-{len(self.logs)}.log"
        process = SchedulerProcess("tests.support.chaos_jobs", self.env, [], log)
        self.logs[process.popen.pid] = log
        process.wait_started(timeout=60)
        return process

    def pick(self, leader: int | None, on_leader: bool, rng: random.Random) -> tuple[int, bool]:
        """The index of the process a fault hits, and whether it holds the lease."""
        pids = [process.popen.pid for process in self.processes]
        if leader in pids and (on_leader or len(pids) == 1):
            return pids.index(leader), True
        others = [index for index, pid in enumerate(pids) if pid != leader]
        return rng.choice(others), False

    def check_alive(self) -> None:
        """A scheduler that exited without being told to is a finding; it is restarted in its place."""
        for index, process in enumerate(self.processes):
            if process.popen.poll() is not None:
                self.problems.append(
                    f"scheduler pid {process.popen.pid} exited by itself "
                    f"with code {process.popen.returncode}; "
                    f"its log ends: {process.output()[-1500:]}"
                )
                self.processes[index] = self.start()

    def stop_all(self) -> None:
        for process in self.processes:
            process.signal(signal.SIGCONT)
            process.signal(signal.SIGTERM)
        for process in self.processes:
            code = process.wait(timeout=settings_chaos.SCHEDULING_SHUTDOWN_TIMEOUT + 60)
            if code != 0:
                self.problems.append(
                    f"scheduler pid {process.popen.pid} exited with code {code} on SIGTERM; "
                    f"its log ends: {process.output()[-1500:]}"
                )

    def kill_all(self) -> None:
        for process in self.processes:
            process.stop()


def inflict(
    step: chaos.Step, schedulers: Schedulers, database: DjangoDatabase, rng: random.Random
) -> chaos.Fault:
    """Apply one fault and return its window (epoch seconds, from its start to its end)."""
    started = time.time()
    if step.kind == chaos.KILL_CONNECTIONS:
        database.kill_connections()
        return chaos.Fault(step.kind, None, started, time.time())
    if step.kind == chaos.RESTART_DATABASE:
        database.restart(step.seconds)
        return chaos.Fault(step.kind, None, started, time.time())
    index, leader = schedulers.pick(database.leader_pid(), step.on_leader, rng)
    process = schedulers.processes[index]
    fault = chaos.Fault(step.kind, process.popen.pid, started, started, leader)
    if step.kind == chaos.SIGSTOP:
        process.signal(signal.SIGSTOP)
        time.sleep(step.seconds)  # the freeze itself
        process.signal(signal.SIGCONT)
    elif step.kind == chaos.SIGKILL:
        process.signal(signal.SIGKILL)
        process.wait()  # reaped at once: a zombie would still look alive to the others
    else:
        process.signal(signal.SIGTERM)
        code = process.wait(timeout=settings_chaos.SCHEDULING_SHUTDOWN_TIMEOUT + 60)
        if code != 0:
            schedulers.problems.append(f"scheduler pid {fault.pid} exited with code {code} on SIGTERM")
    fault.ended = time.time()
    if step.kind in (chaos.SIGKILL, chaos.DEPLOY):
        time.sleep(step.seconds)  # down for a while, then back, as a supervisor would restart it
        schedulers.processes[index] = schedulers.start()
    return fault


def keep_artifacts(directory: Path, name: str) -> Path:
    """The trace and the logs of a failed run, kept for diagnosis (tests/artifacts/ is ignored by git)."""
    kept = ARTIFACTS / name
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(directory, kept)
    return kept


@pytest.mark.processes
@pytest.mark.timeout(SECONDS + 300)
def test_no_fault_sequence_runs_a_fire_twice_or_loses_one(
    database: DjangoDatabase, tmp_path: Path, figures
) -> None:
    vendor = "postgresql (own cluster)" if isinstance(database, ClusterDatabase) else connection.vendor
    print(f"chaos seed {SEED} ({vendor}, {SECONDS:g} s): replay with SCHEDULING_CHAOS_SEED={SEED}")
    # Who a fault hits, drawn apart from the plan so that the plan stays the same for a seed.
    rng = random.Random(SEED + 1)  # noqa: S311 (replayable, not a secret)
    schedulers = Schedulers(2 if connection.vendor == "sqlite" else 3, database, tmp_path)
    faults: list[chaos.Fault] = []
    try:
        trace = tmp_path / "trace"
        wait_for(lambda: len(chaos.read_trace(trace)) >= chaos.EVERY_JOBS, timeout=60)
        begin = time.time()
        deadline = begin + SECONDS
        for step in chaos.plan(SEED, database.kinds):
            if time.time() + step.delay >= deadline:
                break
            time.sleep(step.delay)  # the load between two faults
            faults.append(inflict(step, schedulers, database, rng))
            schedulers.check_alive()
        time.sleep(max(0.0, deadline - time.time()))
        end = time.time() - chaos.BEFORE_FAULT
        schedulers.stop_all()
    finally:
        schedulers.kill_all()

    verdict = chaos.Verdict(
        chaos.read_trace(trace), database.rows(), faults, begin, end, ALLOWANCE, schedulers.logs
    )
    findings = {
        "fires run twice": verdict.duplicates(),
        "runs without their history row": verdict.unrecorded(),
        "rows left unfinished": verdict.unfinished(),
        "runs overlapping (max_instances=1 or one lock)": verdict.overlaps(),
        "fires not run outside fault windows": verdict.gaps(),
        "schedulers that did not stop cleanly": [chaos.Finding(text, end) for text in schedulers.problems],
    }
    takeovers = sum(log.read_text().count("holds the lease") for log in schedulers.logs.values()) - 1
    statuses = Counter(row.status for row in verdict.rows)
    figures(
        f"chaos {vendor}, seed {SEED}, {SECONDS:g} s, {len(schedulers.processes)} schedulers: "
        f"faults {dict(Counter(fault.kind for fault in faults))}, {takeovers} take-overs, "
        f"{len(verdict.runs)} runs, history {dict(statuses)}, {verdict.missing_inside} fires unrun inside "
        f"fault windows (allowance {ALLOWANCE:g} s); findings "
        + ", ".join(f"{name}: {len(found)}" for name, found in findings.items())
    )
    report = [
        f"{len(found)} {name}:\n"
        + "\n".join(f"- {verdict.explain(item)}" for item in found[:8])
        + ("\n- ..." if len(found) > 8 else "")
        for name, found in findings.items()
        if found
    ]
    if report:
        kept = keep_artifacts(tmp_path, f"chaos-{connection.vendor}-{SEED}")
        sequence = "\n".join(f"  {fault}" for fault in faults)
        pytest.fail(
            f"chaos seed {SEED} ({vendor}): replay with SCHEDULING_CHAOS_SEED={SEED}; "
            f"trace and logs in {kept}\n"
            f"faults:\n{sequence}\n" + "\n".join(report),
            pytrace=False,
        )


# The verdict itself, on planted traces: the suite must not be wrong the other way.
BEGIN = 1_800_000_000.0


def clean_run(seconds: int = 30) -> tuple[list[chaos.Run], list[chaos.Row]]:
    """Every fire of every job run once by pid 1, with its row."""
    runs: list[chaos.Run] = []
    rows: list[chaos.Row] = []
    jobs = [(f"chaos.every.{n}", 1) for n in range(chaos.EVERY_JOBS)]
    jobs += [(f"chaos.jitter.{n}", 2) for n in range(chaos.JITTER_JOBS)]
    for job_id, period in jobs:
        for step in range(0, seconds, period):
            scheduled = BEGIN + step + (0.3 if period == 2 else 0.0)
            runs.append(chaos.Run(job_id, scheduled, 1, scheduled, scheduled + 0.01, len(rows)))
            rows.append(chaos.Row(job_id, scheduled, "succeeded", 1, len(rows)))
    return runs, rows


def verdict(
    runs: list[chaos.Run], rows: list[chaos.Row], faults: Sequence[chaos.Fault] = ()
) -> chaos.Verdict:
    return chaos.Verdict(runs, rows, list(faults), BEGIN, BEGIN + 28, ALLOWANCE)


def test_the_verdict_of_a_clean_run_has_no_findings() -> None:
    judged = verdict(*clean_run())
    assert (
        judged.duplicates(),
        judged.unrecorded(),
        judged.unfinished(),
        judged.overlaps(),
        judged.gaps(),
    ) == (
        [],
        [],
        [],
        [],
        [],
    )


def test_a_slot_run_twice_under_two_jittered_times_is_a_duplicate_naming_both_processes() -> None:
    runs, rows = clean_run()
    stale = chaos.Run("chaos.jitter.0", BEGIN + 10.9, 2, BEGIN + 11, BEGIN + 11.01, 999)
    faults = [chaos.Fault(chaos.SIGSTOP, 2, BEGIN + 5, BEGIN + 11, leader=True)]
    judged = verdict(
        [*runs, stale], [*rows, chaos.Row("chaos.jitter.0", stale.scheduled, "succeeded", 2, 999)], faults
    )

    [duplicate] = judged.duplicates()
    found = judged.explain(duplicate)
    assert "chaos.jitter.0 fire" in found
    assert "ran 2 times" in found
    assert "pid 1 " in found
    assert "pid 2 " in found
    assert "SIGSTOP pid 2 (leader)" in found


def test_attempts_at_a_fire_are_counted_apart_and_a_retry_run_twice_is_a_duplicate() -> None:
    runs, rows = clean_run()
    fire = BEGIN + 4
    first = chaos.Run("chaos.retry.0", fire, 1, fire, fire + 0.01, 1001)
    retry = chaos.Run("chaos.retry.0", fire, 1, fire + 1, fire + 1.01, 1002, attempt=2)
    rows += [
        chaos.Row("chaos.retry.0", fire, "failed", 1, 1001),
        chaos.Row("chaos.retry.0", fire, "succeeded", 1, 1002, attempt=2),
    ]
    judged = verdict([*runs, first, retry], rows)
    assert (judged.duplicates(), judged.unrecorded()) == ([], [])

    again = chaos.Run("chaos.retry.0", fire, 2, fire + 1, fire + 1.02, 1002, attempt=2)
    [duplicate] = verdict([*runs, first, retry, again], rows).duplicates()
    assert "attempt 2 ran 2 times" in str(duplicate)


def test_a_run_without_its_row_a_row_without_its_run_and_a_row_left_running_are_found() -> None:
    runs, rows = clean_run()
    rows = [row for row in rows if (row.job_id, row.scheduled) != ("chaos.every.3", BEGIN + 7)]
    rows.append(chaos.Row("chaos.every.4", BEGIN + 40, "succeeded", 1, 1000))
    rows.append(chaos.Row("chaos.every.5", BEGIN + 41, "running", 2, 1001))

    unrecorded = [str(finding) for finding in verdict(runs, rows).unrecorded()]
    assert len(unrecorded) == 2
    assert "chaos.every.3 ran in pid 1" in unrecorded[0]
    assert "has no history row" in unrecorded[0]
    assert "chaos.every.4 fire" in unrecorded[1]
    assert "never ran" in unrecorded[1]
    [unfinished] = map(str, verdict(runs, rows).unfinished())
    assert "chaos.every.5" in unfinished
    assert "left running" in unfinished


def test_fires_not_run_are_excused_inside_a_fault_window_and_found_outside_it() -> None:
    runs, rows = clean_run()
    runs = [
        run
        for run in runs
        if not (run.job_id == "chaos.every.7" and BEGIN + 10 <= run.scheduled <= BEGIN + 12)
    ]
    runs = [run for run in runs if not (run.job_id == "chaos.jitter.1" and run.scheduled > BEGIN + 20)]

    [gap, tail] = map(str, verdict(runs, rows).gaps())
    assert "chaos.every.7: 3 fire(s)" in gap
    assert "history: {'succeeded': 3}" in gap
    assert "chaos.jitter.1: 5 fire(s)" in tail

    fault = chaos.Fault(chaos.SIGKILL, 1, BEGIN + 9.5, BEGIN + 9.5, leader=True)
    excused = verdict(runs, rows, [fault])
    assert [str(found).split(":")[0] for found in excused.gaps()] == ["chaos.jitter.1"]
    assert excused.missing_inside == 3


def test_runs_of_a_max_instances_job_overlapping_in_time_are_found() -> None:
    first = chaos.Run("chaos.slow.0", BEGIN, 1, BEGIN, BEGIN + 4, 1)
    second = chaos.Run("chaos.slow.0", BEGIN + 3, 2, BEGIN + 3, BEGIN + 7, 2)
    after = chaos.Run("chaos.slow.0", BEGIN + 7, 2, BEGIN + 7, BEGIN + 11, 3)

    [found] = map(str, verdict([first, second, after], []).overlaps())
    assert "ran twice at once" in found
    assert "pid 1 " in found
    assert "pid 2 " in found


def test_runs_of_jobs_sharing_a_lock_overlapping_in_time_are_found_and_back_to_back_runs_are_not() -> None:
    first = chaos.Run("chaos.locked.0", BEGIN, 1, BEGIN, BEGIN + 0.6, 1)
    next_to_it = chaos.Run("chaos.locked.1", BEGIN + 1, 2, BEGIN + 0.6, BEGIN + 1.2, 2)
    assert verdict([first, next_to_it], []).overlaps() == []

    overlapping = chaos.Run("chaos.locked.2", BEGIN + 1, 2, BEGIN + 1, BEGIN + 1.6, 3)
    [found] = map(str, verdict([first, next_to_it, overlapping], []).overlaps())
    assert found.startswith('the jobs sharing the lock "chaos-lock": ran twice at once: chaos.locked.1')
    assert "and chaos.locked.2 in pid 2" in found


def test_a_run_recorded_interrupted_is_a_finding_unless_its_process_was_killed_after_it() -> None:
    runs, rows = clean_run()
    rows = [
        row if row.execution != 5 else chaos.Row(row.job_id, row.scheduled, "interrupted", 1, 5)
        for row in rows
    ]

    [found] = map(str, verdict(runs, rows).unrecorded())
    assert "is recorded interrupted, though its process lived on" in found
    killed = chaos.Fault(chaos.SIGKILL, 1, runs[5].ended + 0.5, runs[5].ended + 0.5)
    assert verdict(runs, rows, [killed]).unrecorded() == []
    killed_much_later = chaos.Fault(chaos.SIGKILL, 1, runs[5].ended + 30, runs[5].ended + 30)
    assert len(verdict(runs, rows, [killed_much_later]).unrecorded()) == 1
