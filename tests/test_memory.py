"""A scheduler that took over gives the memory its sync freed back to the operating system and, in
a process of its own, sets aside from the garbage collector what lives on."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from django.core.management import call_command

from scheduling import job
from scheduling.management.commands import runscheduler
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


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's collector as it was: nothing set aside."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.mark.usefixtures("unfrozen")
def test_in_a_process_of_its_own_what_lives_on_is_set_aside_from_the_collector() -> None:
    memory.settle(freeze=True)
    assert gc.get_freeze_count() > 1000  # Django, the modules, pytest…
    memory.settle(freeze=False)
    assert gc.get_freeze_count() > 1000  # nothing unfrozen: an embedded scheduler leaves it be


@pytest.mark.usefixtures("unfrozen")
def test_a_cycle_frozen_at_one_take_over_and_dead_since_is_collected_at_the_next() -> None:
    node = Node()
    alive = weakref.ref(node)
    memory.settle(freeze=True)
    del node
    gc.collect()
    assert alive() is not None, "frozen: out of the collector's sight"

    memory.settle(freeze=True)

    assert alive() is None


@pytest.mark.usefixtures("unfrozen")
def test_an_embedded_scheduler_freezes_nothing() -> None:
    memory.settle(freeze=False)
    assert gc.get_freeze_count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("own_process", [True, False])
def test_a_scheduler_settles_after_its_sync_freezing_only_in_a_process_of_its_own(
    registry: dict, monkeypatch: pytest.MonkeyPatch, own_process: bool
) -> None:
    runner = Runner(threads=2, own_process=own_process)
    given: list[SyncReport | None] = []
    froze: list[bool] = []

    def settle(freeze: bool) -> None:
        given.append(runner.sync_report)
        froze.append(freeze)

    monkeypatch.setattr(memory, "settle", settle)
    job(interval=60, id="any")(jobs.succeed)
    runner.start()
    try:
        wait_for(lambda: runner.active)
    finally:
        runner.stop(timeout=5)
    [report] = given
    assert report is not None, "settled after the sync, not before"
    assert report.added == ["any"]
    assert froze == [own_process]


def test_runscheduler_runs_the_scheduler_as_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict] = []

    class Made(Exception):
        pass

    def runner(**options: object) -> None:
        made.append(options)
        raise Made

    monkeypatch.setattr(runscheduler, "Runner", runner)
    with pytest.raises(Made):
        call_command("runscheduler", verbosity=0)
    assert made[0]["own_process"] is True
