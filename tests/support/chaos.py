"""The randomized fault suite's harness (tests/test_chaos.py): the fault plan, the trace, the verdict.

The verdict is drawn from two sources that do not depend on each other: the trace the jobs append
to a file (what really ran, in which process) and the history table (what the schedulers say
happened). Every finding names the fire, the processes and the faults around it, so a failing
seed can be diagnosed from the test report alone.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

EVERY_JOBS = 50
JITTER_JOBS = 5
JITTER_PERIOD = 2.0
SLOW_JOBS = 2
SLOW_SECONDS = 4.0
RETRY_JOBS = 3
RETRY_PERIOD = 2.0
RETRIED = "chaos.retry."  # their first attempt fails on purpose; the second succeeds
LOCKED_JOBS = 3  # every second, 0.6 s runs, all sharing one lock (the last one queues)
LOCKED_SECONDS = 0.6
LOCK = "chaos-lock"
QUEUE_SECONDS = 2.5  # chaos.queue.0: max_instances=1, overlap="queue", every second

SIGKILL, SIGSTOP, DEPLOY = "SIGKILL", "SIGSTOP", "SIGTERM+restart"
KILL_CONNECTIONS, RESTART_DATABASE = "connections killed", "database restarted"
# Statuses a row may keep once every scheduler has stopped cleanly (a queued fire waits for the
# next scheduler, as a pending retry does).
FINAL = {"succeeded", "failed", "missed", "skipped", "interrupted", "queued"}
# How long after a run its process may be killed and the run's row rightly say "interrupted".
OUTCOME_WRITE = 10.0
# A fault also disturbs the fires due just before it (dispatched, not yet run).
BEFORE_FAULT = 2.0


@dataclass(frozen=True)
class Step:
    """One planned fault: drawn from the seed alone, so a seed replays the same sequence."""

    delay: float  # seconds after the previous fault ended
    kind: str
    on_leader: bool  # aimed at the lease holder (else at a random standby)
    seconds: float  # how long a process stays frozen, down before its restart, or the database down


def plan(seed: int, kinds: list[str]) -> Iterator[Step]:
    rng = random.Random(seed)  # noqa: S311 (a replayable sequence, not a secret)
    while True:
        kind = rng.choice(kinds)
        seconds = {SIGSTOP: rng.uniform(3, 12), RESTART_DATABASE: rng.uniform(2, 6)}.get(
            kind, rng.uniform(2, 5)
        )
        yield Step(rng.uniform(5, 15), kind, rng.random() < 0.75, seconds)


@dataclass
class Fault:
    kind: str
    pid: int | None  # the process it hit (None: the database)
    started: float  # epoch seconds
    ended: float
    leader: bool = False

    def __str__(self) -> str:
        target = f" pid {self.pid}{' (leader)' if self.leader else ''}" if self.pid else ""
        return f"{self.kind}{target} {clock(self.started)}-{clock(self.ended)}"


@dataclass(frozen=True)
class Run:
    """One line of the trace: a run whose code went to its end."""

    job_id: str
    scheduled: float
    pid: int
    started: float
    ended: float
    execution: int | None
    attempt: int = 1

    def __str__(self) -> str:
        return (
            f"pid {self.pid} (scheduled {clock(self.scheduled)}, attempt {self.attempt}, "
            f"ran {clock(self.started)}-{clock(self.ended)}, execution {self.execution})"
        )


@dataclass(frozen=True)
class Row:
    """One row of the history table."""

    job_id: str
    scheduled: float
    status: str
    pid: int | None
    execution: int
    attempt: int = 1


def clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S.%f")[:-3]


def epoch(moment: datetime) -> float:
    return round(moment.timestamp(), 6)


def slot(job_id: str, scheduled: float) -> float:
    """The fire a run serves: its scheduled time, or the grid point under the jitter."""
    if job_id.startswith("chaos.jitter."):
        return math.floor(scheduled / JITTER_PERIOD) * JITTER_PERIOD
    return scheduled


def read_trace(path: Path) -> list[Run]:
    runs = []
    for line in path.read_text().splitlines() if path.exists() else []:
        job_id, scheduled, pid, started, ended, execution, attempt = line.split()
        runs.append(
            Run(
                job_id,
                epoch(datetime.fromisoformat(scheduled)),
                int(pid),
                float(started),
                float(ended),
                None if execution == "None" else int(execution),
                int(attempt),
            )
        )
    return runs


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


# Log lines that tell a lease's story; the per-fire "missed"/"skipped" warnings would drown them.
TELLING = re.compile(r"lease|stopped scheduling|interrupted|Database error|recovered|ERROR|Traceback")


def log_excerpt(logs: dict[int, Path], pids: Iterable[int], around: float, limit: int = 12) -> list[str]:
    """What these processes' logs say about leases, interruptions and errors within 6 s of ``around``."""
    lines = []
    for pid in sorted(set(pids)):
        log = logs.get(pid)
        for line in log.read_text(errors="replace").splitlines() if log else []:
            found = LOG_TIME.match(line)
            if not found or not TELLING.search(line):
                continue
            moment = datetime.fromisoformat(f"{found[1]}.{found[2]}").replace(tzinfo=UTC).timestamp()
            if abs(moment - around) <= 6:
                lines.append((moment, f"    [pid {pid}] {line[11:300]}"))
    return [line for _, line in sorted(lines)[:limit]]


@dataclass(frozen=True)
class Finding:
    """What is wrong, when, and the runs involved: explained (faults, log lines) only if reported."""

    text: str
    moment: float
    runs: Sequence[Run] = ()

    def __str__(self) -> str:
        return self.text


@dataclass
class Verdict:
    runs: list[Run]
    rows: list[Row]
    faults: list[Fault]
    begin: float  # the window judged for gaps: all schedulers up ...
    end: float  # ... until the clean stop began
    allowance: float  # seconds after a fault during which fires may go unrun (a take-over)
    logs: dict[int, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each attempt at a fire is a run of its own: duplicates are counted per attempt.
        self.row_of = {(row.job_id, row.scheduled, row.attempt): row for row in self.rows}
        self.row_of_slot = {
            (row.job_id, round(slot(row.job_id, row.scheduled), 1)): row
            for row in self.rows
            if row.attempt == 1
        }
        self.runs_of_slot: dict[tuple[str, float, int], list[Run]] = defaultdict(list)
        for run in self.runs:
            self.runs_of_slot[run.job_id, slot(run.job_id, run.scheduled), run.attempt].append(run)
        self.missing_inside = 0  # slots without a run, excused by a fault window

    def faults_near(self, moment: float, margin: float = 15.0) -> str:
        near = [
            str(fault) for fault in self.faults if fault.started - margin <= moment <= fault.ended + margin
        ]
        return "; ".join(near) or "none"

    def excused(self, moment: float) -> bool:
        return any(
            fault.started - BEFORE_FAULT <= moment <= fault.ended + self.allowance for fault in self.faults
        )

    def explain(self, finding: Finding) -> str:
        """The finding with the faults around it and what the processes involved logged then."""
        pids = [run.pid for run in finding.runs] + self.pids_near(finding.moment)
        excerpt = log_excerpt(self.logs, pids, finding.moment)
        return f"{finding.text}\n  faults around: {self.faults_near(finding.moment)}" + "".join(
            f"\n{line}" for line in excerpt
        )

    def pids_near(self, moment: float) -> list[int]:
        return [f.pid for f in self.faults if f.pid and f.started - 15 <= moment <= f.ended + 15]

    def duplicates(self) -> list[Finding]:
        """Attempts at a fire that ran more than once."""
        found = []
        for (job_id, moment, attempt), runs in sorted(self.runs_of_slot.items(), key=lambda item: item[0][1]):
            if len(runs) > 1:
                rows = [self.row_of.get((job_id, run.scheduled, run.attempt)) for run in runs]
                each = ", ".join(
                    f"{run} row {row.status if row else 'none'}" for run, row in zip(runs, rows, strict=True)
                )
                text = f"{job_id} fire {clock(moment)} attempt {attempt} ran {len(runs)} times: {each}"
                found.append(Finding(text, moment, runs))
        return found

    def unrecorded(self) -> list[Finding]:
        """Runs the history does not show as run by their process, and rows of runs that never were."""
        found = []
        for run in self.runs:
            row = self.row_of.get((run.job_id, run.scheduled, run.attempt))
            # The first attempt of a retried job raises once its trace is written.
            ended = {"failed"} if run.job_id.startswith(RETRIED) and run.attempt == 1 else {"succeeded"}
            if row is None:
                problem = "has no history row"
            elif row.status not in {*ended, "interrupted", "running", "enqueued"}:
                problem = f"is recorded {row.status}"
            elif row.pid != run.pid:
                problem = f"is recorded ({row.status}) as run by pid {row.pid}"
            elif row.status == "interrupted" and not self.killed_after(run):
                problem = (
                    "is recorded interrupted, though its process lived on (not killed within 10 s of the run)"
                )
            else:
                continue
            found.append(Finding(f"{run.job_id} ran in {run} but {problem}", run.scheduled, [run]))
        ran = {(run.job_id, run.scheduled, run.attempt) for run in self.runs}
        for row in self.rows:
            if row.status == "succeeded" and (row.job_id, row.scheduled, row.attempt) not in ran:
                text = (
                    f"{row.job_id} fire {clock(row.scheduled)} is recorded succeeded "
                    f"(execution {row.execution}, pid {row.pid}) but never ran"
                )
                found.append(Finding(text, row.scheduled))
        return found

    def killed_after(self, run: Run) -> bool:
        """Whether the run's process was killed before it could record the run's end: within
        ``OUTCOME_WRITE`` seconds of it (outcomes are written in batches, within a second)."""
        return any(
            fault.kind == SIGKILL
            and fault.pid == run.pid
            and 0 <= fault.started - run.ended + 0.01 <= OUTCOME_WRITE
            for fault in self.faults
        )

    def unfinished(self) -> list[Finding]:
        """Rows left in a non-final status after every scheduler stopped cleanly."""
        return [
            Finding(
                f"{row.job_id} fire {clock(row.scheduled)} left {row.status} "
                f"(execution {row.execution}, pid {row.pid})",
                row.scheduled,
            )
            for row in self.rows
            if row.status not in FINAL
        ]

    def overlaps(self) -> list[Finding]:
        """Runs that must never go on at the same time and did: those of one ``max_instances=1``
        job, and those of the jobs sharing a lock."""
        groups: dict[str, tuple[str, ...]] = {
            f"chaos.slow.{n} (max_instances=1)": (f"chaos.slow.{n}",) for n in range(SLOW_JOBS)
        }
        groups["chaos.queue.0 (max_instances=1, overlap queue)"] = ("chaos.queue.0",)
        groups[f'the jobs sharing the lock "{LOCK}"'] = tuple(f"chaos.locked.{n}" for n in range(LOCKED_JOBS))
        found = []
        for name, job_ids in groups.items():
            runs = sorted((run for run in self.runs if run.job_id in job_ids), key=lambda r: r.started)
            for earlier, later in itertools.pairwise(runs):
                if later.started < earlier.ended - 0.01:
                    text = (
                        f"{name}: ran twice at once: {earlier.job_id} in {earlier} "
                        f"and {later.job_id} in {later}"
                    )
                    found.append(Finding(text, later.started, [earlier, later]))
        return found

    def gaps(self) -> list[Finding]:
        """Fires without a run outside the fault windows (and their take-over allowance)."""
        found = []
        self.missing_inside = 0
        jobs = [(f"chaos.every.{n}", 1.0) for n in range(EVERY_JOBS)]
        jobs += [(f"chaos.jitter.{n}", JITTER_PERIOD) for n in range(JITTER_JOBS)]
        for job_id, period in jobs:
            every = self.missing_slots(job_id, period)
            missing = [moment for moment in every if not self.excused(moment)]
            self.missing_inside += len(every) - len(missing)
            for span in spans(missing, period):
                recorded = Counter(self.recorded_as(job_id, moment) for moment in span)
                text = (
                    f"{job_id}: {len(span)} fire(s) {clock(span[0])}-{clock(span[-1])} did not run "
                    f"(history: {dict(recorded)})"
                )
                found.append(Finding(text, span[0]))
        return found

    def missing_slots(self, job_id: str, period: float) -> list[float]:
        """The slots of one job within [begin, end] that no run served: before its first run,
        between two runs more than a period apart, after its last one."""
        ran = sorted(moment for (job, moment, attempt) in self.runs_of_slot if job == job_id and attempt == 1)
        if not ran:
            return [self.begin + period * step for step in range(int((self.end - self.begin) / period) + 1)]
        missing = []
        for earlier, later in itertools.pairwise(
            [ran[0] - period * math.ceil((ran[0] - self.begin) / period) - period, *ran]
        ):
            moment = earlier + period
            while moment < later - period / 2:
                missing.append(moment)
                moment += period
        moment = ran[-1] + period
        while moment <= self.end:
            missing.append(moment)
            moment += period
        return [moment for moment in missing if self.begin <= moment <= self.end]

    def recorded_as(self, job_id: str, moment: float) -> str:
        row = self.row_of_slot.get((job_id, round(moment, 1)))
        return row.status if row else "no row"


def spans(moments: list[float], period: float) -> list[list[float]]:
    """Consecutive slots grouped, to report a gap once rather than fire by fire."""
    grouped: list[list[float]] = []
    for moment in moments:
        if grouped and moment - grouped[-1][-1] <= period * 1.5:
            grouped[-1].append(moment)
        else:
            grouped.append([moment])
    return grouped
