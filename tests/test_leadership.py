"""One active scheduler per database: the lease, and runners handing over."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from scheduling import job
from scheduling import sync as sync_module
from scheduling.models import Execution, Lease, SchedulerInstance
from scheduling.queries import scheduler_status
from scheduling.runtime.leadership import Leadership
from scheduling.runtime.service import Runner
from tests.conftest import wait_for
from tests.support import jobs


@pytest.mark.django_db
def test_one_holder_at_a_time_until_it_releases() -> None:
    first, second = Leadership(uuid.uuid4()), Leadership(uuid.uuid4())

    assert first.claim()
    assert first.held
    assert not second.claim()
    assert first.claim(), "the holder renews"

    first.release()
    assert not first.held
    assert second.claim()
    assert not first.claim()


@pytest.mark.django_db
def test_an_expired_lease_can_be_taken_and_its_old_holder_knows_it_lost_it_first() -> None:
    old = Leadership(uuid.uuid4(), duration=1.3)
    new = Leadership(uuid.uuid4())
    assert old.claim()

    wait_for(lambda: not old.held, timeout=2)  # the old holder gives up by its own clock ...
    assert not new.claim()  # ... before the lease has expired in the database,
    wait_for(new.claim, timeout=3)  # which is when another may take it.
    assert not old.claim()


@pytest.fixture
def runners(registry: dict) -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        if runner.scheduler.running:
            runner.stop(timeout=2)


@pytest.mark.django_db(transaction=True)
def test_a_second_runner_stands_by_and_takes_over_when_the_first_stops(runners: list[Runner]) -> None:
    job(interval={"seconds": 1}, id="tick")(jobs.succeed)
    first, second = Runner(), Runner()
    runners.extend([first, second])
    first.start()
    second.start()

    assert (first.active, second.active) == (True, False)
    assert SchedulerInstance.objects.get(pk=second.instance.pk).role == SchedulerInstance.Role.STANDBY
    wait_for(lambda: Execution.objects.filter(job_id="tick").count() >= 2, timeout=5)
    assert set(Execution.objects.values_list("instance", flat=True)) == {first.instance.pk}

    stopped = time.monotonic()
    first.stop(timeout=2)
    wait_for(lambda: second.active, timeout=5)
    took_over = time.monotonic() - stopped

    wait_for(lambda: Execution.objects.filter(instance=second.instance).exists(), timeout=5)
    assert took_over < 3, "a released lease is taken within a renewal interval or two"
    assert SchedulerInstance.objects.get(pk=second.instance.pk).role == SchedulerInstance.Role.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_a_stopping_scheduler_keeps_its_lease_until_its_last_run_ended(
    runners: list[Runner], settings: Any, tmp_path: Path
) -> None:
    settings.SCHEDULING_LEASE_DURATION = 2.0
    settings.SCHEDULING_LEASE_RENEW_INTERVAL = 0.2
    gate = tmp_path / "gate"
    job(interval={"seconds": 1}, id="long", max_instances=1, args=[str(gate)])(jobs.wait_for_file)
    first, second = Runner(), Runner()
    runners.extend([first, second])
    first.start()
    second.start()
    # Started, not only claimed ahead of its time (fire-ahead: a row without a start).
    wait_for(
        lambda: Execution.objects.filter(job_id="long", status="running", started_at__isnull=False).exists(),
        timeout=10,
    )

    stopping = threading.Thread(target=first.stop, kwargs={"timeout": 30})
    stopping.start()
    # Three lease durations into the shutdown wait, the standby must still be waiting.
    deadline = time.monotonic() + 3 * 2.0
    while time.monotonic() < deadline:
        assert not second.active, "the standby took over while the stopping scheduler still ran the job"
        time.sleep(0.1)
    gate.write_text("go")
    stopping.join(timeout=30)
    wait_for(lambda: second.active, timeout=10)

    first_run = (
        Execution.objects.filter(job_id="long", instance=first.instance).order_by("scheduled_at").first()
    )
    assert first_run is not None
    assert first_run.status == "succeeded"
    started_by_second = Execution.objects.filter(
        job_id="long", instance=second.instance, started_at__isnull=False
    )
    wait_for(started_by_second.exists, timeout=10)
    later = started_by_second.order_by("started_at").first()
    assert later is not None
    assert later.started_at is not None
    assert first_run.finished_at is not None
    assert later.started_at >= first_run.finished_at, "two runs of a max_instances=1 job overlapped"


@pytest.mark.django_db(transaction=True)
def test_a_scheduler_that_cannot_start_scheduling_gives_the_lease_up_and_says_why(
    runners: list[Runner], registry: dict, settings: Any
) -> None:
    job(interval={"seconds": 30}, id="fine")(jobs.succeed)
    # A declaration whose function reference cannot be resolved (it bypasses @job's checks).
    registry["gone"] = dataclasses.replace(
        registry["fine"], id="gone", func_ref="tests.support.jobs:no_such_function"
    )
    stuck = Runner()
    runners.append(stuck)
    stuck.start()

    assert not stuck.active
    assert Lease.objects.get().holder is None, "it gave the lease up"
    reason = SchedulerInstance.objects.get(pk=stuck.instance.pk).standby_reason
    assert "could not start scheduling" in reason
    assert "no_such_function" in reason
    status = scheduler_status()
    assert not status.alive
    assert status.standby_reason == reason
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("scheduling", "status", stdout=out)
    assert "no_such_function" in out.getvalue()

    # Once the code is fixed (here: the bad declaration goes), the next attempt succeeds.
    del registry["gone"]
    stuck._next_claim = 0.0
    stuck._lead()
    assert stuck.active
    assert SchedulerInstance.objects.get(pk=stuck.instance.pk).standby_reason == ""


@pytest.mark.django_db(transaction=True)
def test_a_sync_that_outlasts_the_lease_renews_it_and_the_scheduler_takes_over(
    runners: list[Runner], registry: dict, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with 100,000 jobs on a slow machine: here each batch of the first sync takes 0.5 s,
    # and five of them outlast the lease (1.5 s); renewed between batches, it holds.
    settings.SCHEDULING_LEASE_DURATION = 1.5
    settings.SCHEDULING_LEASE_RENEW_INTERVAL = 0.2
    for number in range(5):
        job(interval={"seconds": 30}, id=f"slow-{number}")(jobs.succeed)
    monkeypatch.setattr(sync_module, "SYNC_BATCH", 1)
    write = sync_module.apply_declarations

    def slowly(*args: Any) -> Any:
        time.sleep(0.5)
        return write(*args)

    monkeypatch.setattr(sync_module, "apply_declarations", slowly)
    runner = Runner()
    runners.append(runner)

    runner.start()

    assert runner.active
    assert runner.leadership.held
    assert runner.sync_report is not None
    assert len(runner.sync_report.added) == 5
    epoch = Lease.objects.get().epoch
    runner._lead()  # its next renewal keeps the epoch: nobody took over meanwhile
    assert runner.active
    assert Lease.objects.get().epoch == epoch
