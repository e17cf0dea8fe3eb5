"""One active scheduler per database: the lease, and runners handing over."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from scheduling import job
from scheduling.leadership import Leadership
from scheduling.models import Execution, SchedulerInstance
from scheduling.runner import Runner
from tests import jobs
from tests.conftest import wait_for


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
