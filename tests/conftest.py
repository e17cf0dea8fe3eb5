from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from scheduling import declarations
from scheduling.history.recorder import Recorder
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore

# Checks shared by several tests live in tests/support: their failed asserts say what differed.
# (Before any test module imports them.)
pytest.register_assert_rewrite("tests.support")

ROOT = Path(__file__).resolve().parent.parent


FIGURES: list[str] = []


@pytest.fixture
def figures() -> Callable[[str], None]:
    """Report a measured figure; all of them are printed at the end of the run, for the CI log."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def executor() -> Iterator[ThreadTarget]:
    """A thread pool that records runs, for driving the dispatcher without a runner."""
    pool = ThreadTarget(Recorder(), max_workers=4)
    yield pool
    assert pool.wait(10)
    pool.shutdown()


@pytest.fixture
def pooled() -> Iterator[Dispatcher]:
    """A dispatcher whose jobs run in threads, in a one-child process pool, or in task workers."""
    threads = ThreadTarget(Recorder(), max_workers=2)
    pool = ProcessPool(1)
    yield Dispatcher(JobStore(), threads.recorder, run_targets(threads, pool))
    pool.shutdown()
    threads.shutdown()


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    """A dispatcher on a fresh store, its runs on two threads (task workers: django-tasks-db's)."""
    recorder = Recorder()
    pool = ThreadTarget(recorder, max_workers=2)
    yield Dispatcher(JobStore(), recorder, run_targets(pool))
    pool.shutdown()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, declarations.Declaration]:
    """An empty declaration registry for the test, so declarations made in it stay in it."""
    fresh: dict[str, declarations.Declaration] = {}
    monkeypatch.setattr(declarations, "registry", fresh)
    return fresh


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def subprocess_database_url() -> str:
    """A DATABASE_URL that points other processes at the test database."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    return f"{scheme}://{user}{password}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


class SchedulerProcess:
    """A real ``manage.py runscheduler`` process (or another command) on the test database."""

    def __init__(
        self,
        modules: str,
        env: dict[str, str],
        args: list[str],
        log: Path,
        command: str = "runscheduler",
        started_text: str = "Stop with Ctrl-C",
        wrapper: tuple[str, ...] = (),
        program: tuple[str, ...] = ("manage.py",),
    ) -> None:
        self.log = log
        self.started_text = started_text
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": subprocess_database_url(),
            "SCHEDULING_TEST_MODULES": modules,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.popen = subprocess.Popen(
            [*wrapper, sys.executable, *program, command, *args],
            cwd=ROOT,
            env=full_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_started(self, timeout: float = 60.0) -> None:
        # A deadline, not a measure: a loaded machine can take 20 s to spawn and set up the
        # process pool's Django children before the scheduler prints that it runs.
        wait_for(lambda: self.started_text in self.output() or self.popen.poll() is not None, timeout)
        assert self.popen.poll() is None, self.output()

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # Where it hangs, for the failure's report: tests/settings.py dumps the stacks on SIGUSR1.
            self.popen.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 5
            while "most recent call first" not in self.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise AssertionError(
                f"pid {self.popen.pid} did not exit within {timeout:g} s; "
                f"its log ends:\n{self.output()[-20000:]}"
            ) from None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)


@pytest.fixture
def scheduler_process(tmp_path: Path, transactional_db: None) -> Iterator[Callable[..., SchedulerProcess]]:
    started: list[SchedulerProcess] = []

    def start(
        modules: str = "", env: dict[str, str] | None = None, args: list[str] | None = None, **options: Any
    ) -> SchedulerProcess:
        log = tmp_path / f"{options.get('command', 'scheduler')}-{len(started)}.log"
        process = SchedulerProcess(modules, env or {}, args or [], log, **options)
        started.append(process)
        process.wait_started()
        return process

    yield start
    for process in started:
        process.stop()
