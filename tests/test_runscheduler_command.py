"""runscheduler's refusals: bad arguments, an unmigrated or unreachable database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent


def run(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "manage.py", "runscheduler"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0"], "'0' must be a whole number >= 1"),
        (["--shutdown-timeout", "soon"], "'soon' is not a number of seconds"),
        (["--shutdown-timeout", "-1"], "'-1' must be 0 or more seconds"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("runscheduler", *args)


def test_an_unmigrated_database_is_refused_with_the_migrations_to_apply(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path / 'empty.sqlite3'}")

    assert result.returncode == 1
    assert "unapplied migration(s)" in result.stderr
    assert "scheduling.0001_initial" in result.stderr
    assert "Run 'manage.py migrate' first" in result.stderr


def test_an_unreachable_database_is_refused_with_where_it_was_looked_for() -> None:
    result = run("postgres://postgres@127.0.0.1:9/nowhere")

    assert result.returncode == 1
    assert "Cannot reach the postgresql database nowhere on 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_scheduler_alive_on_another_machine_sharing_the_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    # Beating an hour ahead, so it still counts as alive however slowly runscheduler starts.
    other = (
        "from datetime import timedelta; from django.utils import timezone; "
        "from scheduling.models import SchedulerInstance; "
        "SchedulerInstance.objects.create("
        "hostname='nas-2', pid=1, last_beat=timezone.now() + timedelta(hours=1))"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", other], cwd=ROOT, env=env, check=True, timeout=60
    )

    result = run(url)

    assert result.returncode == 1
    assert "one SQLite database" in result.stderr
    assert "nas-2" in result.stderr
    assert "(scheduling.E003)" in result.stderr


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """The command installs its stop handlers in this process: the test's are put back after."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("own_signal_handlers")
def test_a_stop_signal_that_comes_while_the_scheduler_starts_stops_it_gracefully_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scheduling.management.commands import runscheduler

    calls: list[str] = []

    class Starting:
        """A Runner that is told to stop (SIGTERM, as a deploy sends it) halfway through its start."""

        def __init__(self, threads: int | None = None, own_process: bool = False) -> None:
            self.instance = None

        def start(self) -> None:
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler), "SIGTERM would kill the process with the default action"
            handler(signal.SIGTERM, None)
            calls.append("started")

        def stop(self, timeout: float) -> int:
            calls.append("stopped")
            return 0

    monkeypatch.setattr(runscheduler, "Runner", Starting)
    call_command("runscheduler", verbosity=0)
    assert calls == ["started", "stopped"]


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("own_signal_handlers")
def test_a_stop_signal_delivered_to_another_thread_still_stops_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from scheduling.management.commands import runscheduler

    calls: list[str] = []

    class Started:
        """A Runner whose process gets SIGTERM in one of its own threads, not the main one."""

        def __init__(self, threads: int | None = None, own_process: bool = False) -> None:
            self.instance = None

        def start(self) -> None:
            def signal_this_thread() -> None:
                signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

            threading.Timer(0.2, signal_this_thread).start()

        def stop(self, timeout: float) -> int:
            calls.append("stopped")
            return 0

    monkeypatch.setattr(runscheduler, "Runner", Started)
    monkeypatch.setattr(runscheduler, "STOP_CHECK", 0.1)
    call_command("runscheduler", verbosity=0)
    assert calls == ["stopped"]
