"""Changes pushed by PostgreSQL (LISTEN/NOTIFY): the listener, its fallback to polling, and an idle
scheduler that sends neither next-run polls nor run-request reads while pushed."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.triggers.date import DateTrigger
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import override_settings
from django.utils import timezone
from django_apscheduler.jobstores import DjangoJobStore

from scheduling import control, job
from scheduling.models import Execution, SchedulerInstance
from scheduling.runtime.notifications import (
    CHANNELS,
    JOBS,
    MAINTENANCE,
    PROBE,
    RUN_REQUESTS,
    ChangeListener,
)
from scheduling.runtime.service import Runner
from tests.conftest import wait_for
from tests.support import jobs

pytestmark = pytest.mark.django_db(transaction=True)
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's; other databases poll"
)


@pytest.fixture
def heard() -> queue.Queue[str]:
    return queue.Queue()


@pytest.fixture
def listening(heard: queue.Queue[str]) -> Iterator[Callable[..., ChangeListener]]:
    started: list[ChangeListener] = []

    def start(listener_class: type[ChangeListener] = ChangeListener, **options: Any) -> ChangeListener:
        listener = listener_class(heard.put, **options)
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def hear_all(heard: queue.Queue[str], channels: set[str], timeout: float = 10.0) -> None:
    """Wait until each of ``channels`` was heard at least once (others may come along)."""
    missing = set(channels)
    while missing:
        missing.discard(heard.get(timeout=timeout))


def drain(heard: queue.Queue[str]) -> None:
    while not heard.empty():
        heard.get_nowait()


def one_off(job_id: str, due: Any) -> Job:
    stored = Job(
        None,
        id=job_id,
        func=jobs.succeed,
        trigger=DateTrigger(due),
        executor="default",
        args=(),
        kwargs={},
        name=job_id,
        misfire_grace_time=60,
        coalesce=True,
        max_instances=1,
    )
    stored.next_run_time = due
    return stored


@postgres_only
def test_a_write_to_each_table_is_heard_on_its_channel(listening, heard) -> None:
    listener = listening()
    wait_for(lambda: listener.pushed)
    # Becoming pushed counts as a change on every channel: what was written before is looked at.
    hear_all(heard, set(CHANNELS))
    drain(heard)

    # django-apscheduler's own store, as a process without our code would write to it.
    DjangoJobStore().add_job(one_off("outside", timezone.now() + timedelta(hours=1)))
    hear_all(heard, {JOBS})
    control.run_now("outside", requested_by="alice")
    hear_all(heard, {RUN_REQUESTS})
    control.start_maintenance("test", by="alice")
    hear_all(heard, {MAINTENANCE})
    failed = Execution.objects.create(job_id="outside", status="failed", scheduled_at=timezone.now())
    drain(heard)
    Execution.objects.filter(pk=failed.pk).update(retry_at=timezone.now())
    hear_all(heard, {JOBS})


@postgres_only
def test_a_terminated_listener_backend_falls_back_to_polling_and_comes_back(listening, heard) -> None:
    listener = listening()
    wait_for(lambda: listener.pushed)
    pid = listener.backend_pid
    drain(heard)

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(lambda: not listener.pushed)
    assert "listening again in" in listener.why_polled

    wait_for(lambda: listener.pushed, timeout=20)
    assert listener.backend_pid != pid
    # Whatever was notified while it was away is lost: it asks for a look at everything.
    hear_all(heard, set(CHANNELS))


class PoolerLike(ChangeListener):
    """LISTEN accepted, and its test notifications never come back — what a pooler in
    transaction mode does — until ``delivering`` is set."""

    delivering = False

    def _probe(self, connection: Any) -> str:
        payload = uuid.uuid4().hex
        channel = PROBE if self.delivering else "scheduling_nobody_listens"
        connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        return payload


@postgres_only
def test_a_missing_trigger_keeps_changes_polled_and_saying_which_until_it_is_back(listening) -> None:
    # The probe calls pg_notify itself and comes back without the triggers: they are looked up.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE scheduling_maintenance DISABLE TRIGGER scheduling_notify")
    try:
        listener = listening()
        wait_for(lambda: "scheduling_notify on scheduling_maintenance" in listener.why_polled)
        assert not listener.pushed
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE scheduling_maintenance ENABLE TRIGGER scheduling_notify")
    wait_for(lambda: listener.pushed, timeout=20)


@postgres_only
@pytest.mark.parametrize("switch", ["DISABLE TRIGGER", "ENABLE REPLICA TRIGGER"])
def test_a_trigger_switched_off_while_listening_turns_polling_back_on(listening, switch: str) -> None:
    listener = listening(probe_interval=1.0)
    wait_for(lambda: listener.pushed)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE scheduling_runrequest {switch} scheduling_notify")
    try:
        wait_for(lambda: "scheduling_notify on scheduling_runrequest" in listener.why_polled)
        assert not listener.pushed
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE scheduling_runrequest ENABLE TRIGGER scheduling_notify")
    wait_for(lambda: listener.pushed, timeout=20)


@postgres_only
def test_a_probe_that_never_comes_back_falls_back_to_polling_until_one_does(listening) -> None:
    listener = listening(PoolerLike, probe_timeout=0.5)
    wait_for(lambda: "did not come back" in listener.why_polled)
    assert not listener.pushed

    listener.delivering = True
    wait_for(lambda: listener.pushed, timeout=20)


class StatementLog:
    """The SQL of every statement the scheduler's loop thread sends, in order."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        connection_created.connect(self._on_connection, weak=False)

    def uninstall(self) -> None:
        connection_created.disconnect(self._on_connection)

    def _on_connection(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(self._wrapper)

    def _wrapper(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        # APScheduler names the loop's thread; the alert thread and the test's are left out.
        if threading.current_thread().name == "APScheduler":
            with self._lock:
                self.statements.append(sql)
        return execute(sql, params, many, context)

    def since_pushed(self) -> list[str]:
        """What the loop sent after its first lease renewal once it said changes are pushed:
        the looks that becoming active and becoming pushed ask for are over by then."""
        with self._lock:
            statements = list(self.statements)
        pushed = next((i for i, sql in enumerate(statements) if '"changes" =' in sql), None)
        if pushed is None:
            return []
        renewals = [i for i, sql in enumerate(statements) if i > pushed and LEASE_RENEWAL in sql]
        return statements[renewals[0] :] if renewals else []


LEASE_RENEWAL = 'UPDATE "scheduling_lease"'


@pytest.fixture
def statements() -> Iterator[StatementLog]:
    log = StatementLog()
    log.install()
    yield log
    log.uninstall()


@postgres_only
def test_an_idle_pushed_leader_sends_no_polls_yet_obeys_changes_at_once(registry, statements) -> None:
    job(interval={"hours": 1}, id="hourly")(jobs.succeed)
    runner = Runner(threads=2)
    runner.start()
    try:
        wait_for(lambda: runner.active and runner.listener is not None and runner.listener.pushed)
        # Counted by lease renewals, not by time: five of them, about five seconds, take ten
        # polls of the store and ten reads of the run requests when changes are polled.
        wait_for(lambda: sum(LEASE_RENEWAL in sql for sql in statements.since_pushed()) >= 5, timeout=30)
        idle = statements.since_pushed()
        # Cut at the last renewal so a heartbeat caught between its UPDATE and its look is left out.
        idle = idle[: max(i for i, sql in enumerate(idle) if LEASE_RENEWAL in sql)]
        assert [sql for sql in idle if '"django_apscheduler_djangojob"' in sql] == []
        assert [sql for sql in idle if '"scheduling_runrequest"' in sql] == []
        # Besides the lease, a heartbeat and one look saying there is nothing to recover, expire,
        # close or send (tests beat every second): no look at the runs or alerts themselves.
        beats = [sql for sql in idle if sql.startswith('UPDATE "scheduling_schedulerinstance"')]
        looks = [
            sql for sql in idle if sql.startswith("SELECT EXISTS(") and "scheduling_schedulerinstance" in sql
        ]
        assert beats
        assert len(looks) == len(beats)
        others = [sql for sql in idle if LEASE_RENEWAL not in sql and sql not in beats + looks]
        assert others == []

        DjangoJobStore().add_job(one_off("outside", timezone.now()))
        wait_for(lambda: Execution.objects.filter(job_id="outside", status="succeeded").exists())
        control.run_now("hourly", requested_by="alice")
        wait_for(lambda: Execution.objects.filter(job_id="hourly", origin="manual").exists())
    finally:
        runner.stop(timeout=5)


@postgres_only
@pytest.mark.processes
def test_a_runscheduler_polling_every_30_s_obeys_outside_changes_at_once(scheduler_process, figures) -> None:
    # A poll every 30 s, and the deadlines below are seconds: only a notification explains a pick-up.
    scheduler_process("tests.support.process_jobs_idle", env={"SCHEDULING_TEST_POLL_INTERVAL": "30"})
    pushed = SchedulerInstance.objects.filter(role="active", changes="pushed (LISTEN/NOTIFY)")
    wait_for(pushed.exists, timeout=30)
    finished = Execution.objects.exclude(status="running")

    written = timezone.now()
    DjangoJobStore().add_job(one_off("outside", written))
    added = wait_for(lambda: finished.filter(job_id="outside").first(), timeout=5)
    requested = timezone.now()
    control.run_now("proc.hourly", requested_by="alice")
    manual = wait_for(lambda: finished.filter(job_id="proc.hourly", origin="manual").first(), timeout=5)
    figures(
        "pushed changes (PostgreSQL, poll every 30 s): a job added through DjangoJobStore started "
        f"{(added.started_at - written).total_seconds() * 1000:.0f} ms after the write, a run-now "
        f"request {(manual.started_at - requested).total_seconds() * 1000:.0f} ms after it was made"
    )


@postgres_only
@override_settings(SCHEDULING_LISTEN=False)
def test_with_listening_off_changes_are_polled_and_the_status_says_why(registry) -> None:
    runner = Runner(threads=2)
    runner.start()
    try:
        assert runner.listener is None
        wait_for(lambda: runner.active)
        changes = SchedulerInstance.objects.get(pk=runner.instance.pk).changes
        assert changes == "polled every 0.5 s (SCHEDULING_LISTEN is off)"
    finally:
        runner.stop(timeout=5)


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL pushes changes: the tests above")
def test_on_other_databases_changes_are_polled_and_the_status_says_why(registry) -> None:
    runner = Runner(threads=2)
    runner.start()
    try:
        assert runner.listener is None
        changes = SchedulerInstance.objects.get(pk=runner.instance.pk).changes
        assert changes == f"polled every 0.5 s ({connection.display_name} has no LISTEN/NOTIFY)"
    finally:
        runner.stop(timeout=5)
