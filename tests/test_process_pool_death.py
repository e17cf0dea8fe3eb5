"""The process pool's children die with their scheduler: a SIGKILLed runscheduler leaves no process
behind that could go on running a job its history records as interrupted."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from scheduling.models import Execution
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc"),
]

SLOW_SECONDS = 8.0


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a process, from /proc; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def children(parent: int) -> dict[int, int]:
    """The live children of a process, by pid, with their start times."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := stat(int(entry.name))) and info[0] == parent:
            found[int(entry.name)] = info[2]
    return found


def survivors(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` still running: not gone, not a zombie, and not a new process that
    took a pid over."""
    return [
        pid
        for pid, started in processes.items()
        if (info := stat(pid)) is not None and info[1] not in "ZX" and info[2] == started
    ]


def test_a_sigkilled_scheduler_takes_its_pool_children_and_their_runs_with_it(
    scheduler_process, tmp_path: Path, figures
) -> None:
    env = {"TEST_NOTE_DIR": str(tmp_path), "TEST_SLOW_SECONDS": str(SLOW_SECONDS)}
    process = scheduler_process("tests.support.process_jobs_pool_slow", env=env)
    started = tmp_path / "started"
    wait_for(started.exists, timeout=30)
    run_started = time.monotonic()
    execution = Execution.objects.get(job_id="pool.slow", status="running")
    pool = children(process.popen.pid)
    # The spawned children (one runs the job) and multiprocessing's resource tracker.
    assert int(started.read_text()) in pool
    assert len(pool) >= 2, pool

    process.signal(signal.SIGKILL)
    process.wait(timeout=10)
    killed_at = time.monotonic()

    wait_for(lambda: not survivors(pool), timeout=10, interval=0.1)
    gone_after = time.monotonic() - killed_at
    # The run would have ended SLOW_SECONDS after it started: past that, its side effect never came.
    time.sleep(max(0.0, run_started + SLOW_SECONDS + 2 - time.monotonic()))
    assert not (tmp_path / "finished").exists(), "the job's code went on running after its scheduler died"

    # A scheduler started afterwards records the run interrupted: by then no code of it runs.
    scheduler_process("")
    wait_for(
        lambda: Execution.objects.get(pk=execution.pk).status == Execution.Status.INTERRUPTED, timeout=10
    )
    figures(
        f"SIGKILLed scheduler: its {len(pool)} pool processes (children and resource tracker) were gone "
        f"{gone_after:.2f} s later; the run's side effect never happened"
    )
