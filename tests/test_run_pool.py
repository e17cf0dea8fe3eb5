"""The job threads: every run queued is run, by at most max_workers threads at once, and by
CONCURRENT of them while the runs going on keep ending."""

from __future__ import annotations

import functools
import logging
import threading
import time

import pytest

from scheduling.runs import pool as pool_module
from scheduling.runs.pool import RunPool
from tests.conftest import wait_for


def test_runs_that_do_not_end_let_another_thread_in_after_each_stall_up_to_max_workers() -> None:
    # Each run waits on I/O (here an event): none ends, so after each STALL one more thread
    # takes the next.
    pool = RunPool(3, name="test-job")
    lock = threading.Lock()
    going, most, threads = 0, 0, set()
    release = threading.Event()

    def call() -> None:
        nonlocal going, most
        with lock:
            going += 1
            most = max(most, going)
            threads.add(threading.current_thread().name)
        release.wait(10)
        with lock:
            going -= 1

    try:
        for _ in range(20):
            assert pool.submit(call)
        wait_for(lambda: going == 3)
        assert pool.unfinished == 20
        release.set()
        assert pool.wait(10)
    finally:
        pool.shutdown()
    assert most == 3
    assert threads == {"test-job_0", "test-job_1", "test-job_2"}
    assert pool.unfinished == 0


def test_runs_that_do_not_stall_are_taken_by_at_most_concurrent_threads_of_many() -> None:
    # Ten threads taking turns through short runs wait for the interpreter's lock and for one
    # another's locks: 2-3 times slower than two. (A stall of a minute: none on a slow machine.)
    pool = RunPool(10, name="test-job", stall=60)
    pool.start_all()
    wait_for(lambda: len(pool._parked) == 10)
    lock = threading.Lock()
    going, most = 0, 0

    def short() -> None:
        nonlocal going, most
        with lock:
            going += 1
            most = max(most, going)
        time.sleep(0.001)  # long enough for the runs to overlap, were more threads let in
        with lock:
            going -= 1

    try:
        for _ in range(200):
            pool.submit(short)
        assert pool.wait(30)
    finally:
        pool.shutdown()
    assert most == pool_module.CONCURRENT


def test_a_run_queued_while_the_only_idle_thread_was_woken_for_another_gets_a_thread_of_its_own() -> None:
    # Two runs queued back to back: were the second left to the thread woken for the first, a
    # first that blocks would hold the second back though the pool may start more threads.
    pool = RunPool(2, name="test-job")
    first_going, second_ran, release = threading.Event(), threading.Event(), threading.Event()
    try:
        pool.submit(lambda: None)  # one thread started, now idle; room for one more
        wait_for(lambda: len(pool._parked) == 1)

        def first() -> None:
            first_going.set()
            release.wait(10)

        pool.submit(first)
        pool.submit(second_ran.set)
        assert second_ran.wait(5), "the second run waited for the first"
        assert first_going.is_set()
    finally:
        release.set()
        pool.shutdown()


def test_wait_tells_whether_the_calls_ended_in_time() -> None:
    pool = RunPool(1, name="test-job")
    release = threading.Event()
    try:
        pool.submit(lambda: release.wait(10))
        assert not pool.wait(0.05)
        release.set()
        assert pool.wait(10)
    finally:
        pool.shutdown()


def test_after_shutdown_queued_calls_still_run_and_new_ones_are_refused() -> None:
    pool = RunPool(1, name="test-job")
    release = threading.Event()
    ran: list[int] = []
    pool.submit(lambda: release.wait(10))
    for number in range(3):
        pool.submit(functools.partial(ran.append, number))
    stopper = threading.Thread(target=pool.shutdown)
    stopper.start()
    wait_for(lambda: pool._closed)
    assert not pool.submit(lambda: ran.append(99))
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert ran == [0, 1, 2]


def test_a_shutdown_with_runs_queued_behind_blocked_ones_returns_once_they_ran() -> None:
    # Threads called after the shutdown began, and not let in (two are taking runs), must not be
    # left waiting for a call once the queue runs dry: the shutdown would wait for them forever.
    pool = RunPool(4, name="test-job")
    pool.start_all()
    wait_for(lambda: len(pool._parked) == 4)
    release = threading.Event()
    ran: list[int] = []
    for _ in range(2):
        pool.submit(lambda: release.wait(10))
    wait_for(lambda: pool._taking == 2)
    pool.submit(functools.partial(ran.append, 1))  # a watcher is called for it; one stays parked
    stopper = threading.Thread(target=pool.shutdown)
    stopper.start()
    wait_for(lambda: pool._closed)
    release.set()
    stopper.join(10)
    assert not stopper.is_alive(), "the shutdown waits for a thread that nothing will wake"
    assert ran == [1]


def test_a_call_that_raises_is_logged_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    pool = RunPool(1, name="test-job")
    ran = threading.Event()
    try:
        pool.submit(lambda: 1 / 0)
        pool.submit(ran.set)
        assert ran.wait(5)
        assert pool.wait(5)
    finally:
        pool.shutdown()
    [record] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.getMessage() == "A run ended in an error of the scheduler"
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError


def test_start_all_starts_every_thread_at_once() -> None:
    pool = RunPool(4, name="test-job")
    try:
        pool.start_all()
        wait_for(lambda: len(pool._parked) == 4)
    finally:
        pool.shutdown()


def test_a_thread_let_in_during_a_pause_goes_back_to_waiting_once_runs_flow_again() -> None:
    # A collection, or the outcome writer holding the interpreter, stops every run from ending
    # and looks like a stall: the watcher lets another thread in. Staying, it took turns with
    # the others through the rest of the queue, at the slower pace of three threads and more.
    pool = RunPool(10, name="test-job", stall=0.05)  # a stall far longer than a short run
    pause = threading.Event()
    taking: list[int] = []  # threads taking runs, as each short run starts

    def short() -> None:
        taking.append(pool._taking)
        time.sleep(0.0005)

    try:
        pool.submit(lambda: pause.wait(10))  # both threads held: no run ends for a stall
        pool.submit(lambda: pause.wait(10))
        for _ in range(1000):
            pool.submit(short)
        wait_for(lambda: len(taking) > 20)  # taken by the thread let in
        assert pool._taking == pool_module.CONCURRENT + 1
        pause.set()
        assert pool.wait(30)
    finally:
        pool.shutdown()
    assert max(taking[-300:]) == pool_module.CONCURRENT
