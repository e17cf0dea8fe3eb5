"""A scheduler that took over gives the memory its sync freed back to the operating system."""

from __future__ import annotations

import pytest

from scheduling import job
from scheduling.runtime import memory
from scheduling.runtime.service import Runner
from scheduling.sync import SyncReport
from tests.conftest import wait_for
from tests.support import jobs


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(memory._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_the_free_heap_a_large_step_left_behind_is_given_back() -> None:
    # As a sync leaves it: 100 MB of pickled states (over 512 bytes each: malloc's, not
    # CPython's own allocator), freed but for one in 64, which keeps malloc from trimming the heap.
    blocks = [bytes(1024) + number.to_bytes(4, "big") for number in range(100_000)]
    kept = blocks[::64]
    del blocks
    before = resident_mb()

    memory.give_back()

    assert before - resident_mb() > 50, "most of the 100 MB freed went back to the system"
    assert len(kept) == 1563


@pytest.mark.django_db(transaction=True)
def test_a_scheduler_gives_back_what_its_sync_freed_once_it_has_taken_over(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Runner(threads=2)
    given: list[SyncReport | None] = []
    monkeypatch.setattr(memory, "give_back", lambda: given.append(runner.sync_report))
    job(interval=60, id="any")(jobs.succeed)
    runner.start()
    try:
        wait_for(lambda: runner.active)
    finally:
        runner.stop(timeout=5)
    [report] = given
    assert report is not None, "given back after the sync, not before"
    assert report.added == ["any"]
