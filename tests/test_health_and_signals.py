from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from scheduling import signals
from scheduling.conf import settings
from scheduling.executors import run_job
from scheduling.history import Recorder
from scheduling.models import Execution, SchedulerInstance
from tests import jobs
from tests.test_execution import make_job


@pytest.mark.django_db
def test_health_is_503_without_an_active_scheduler_and_200_with_one(client: Client) -> None:
    response = client.get("/scheduling/health/")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "active_scheduler": False,
        "last_beat": None,
        "standbys": 0,
    }

    SchedulerInstance.objects.create(hostname="worker", pid=1, role="active")
    response = client.get("/scheduling/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert set(response.json()) == {"status", "active_scheduler", "last_beat", "standbys"}, "no job details"


@pytest.mark.django_db
def test_health_ignores_a_scheduler_whose_heartbeat_stopped(client: Client) -> None:
    SchedulerInstance.objects.create(
        hostname="worker", pid=1, role="active", last_beat=timezone.now() - timedelta(hours=1)
    )

    assert client.get("/scheduling/health/").status_code == 503


@pytest.mark.django_db(transaction=True)
def test_signals_tell_started_succeeded_failed_and_missed_and_a_failing_receiver_breaks_nothing() -> None:
    seen: list[tuple[str, str, str]] = []

    def listen(name: str):
        def receiver(sender: str, execution: Execution, **kwargs: object) -> None:
            seen.append((name, sender, execution.status))

        return receiver

    def broken_receiver(**kwargs: object) -> None:
        raise RuntimeError("alerting is down")

    receivers = {name: listen(name) for name in ("started", "succeeded", "failed", "missed")}
    for name, receiver in receivers.items():
        getattr(signals, f"job_{name}").connect(receiver)
    signals.job_failed.connect(broken_receiver)
    try:
        run_job(make_job(jobs.succeed), [datetime.now(UTC)], Recorder())
        run_job(make_job(jobs.fail), [datetime.now(UTC) + timedelta(microseconds=1)], Recorder())
        run_job(make_job(jobs.succeed, grace=1), [datetime.now(UTC) - timedelta(seconds=30)], Recorder())
    finally:
        for name, receiver in receivers.items():
            getattr(signals, f"job_{name}").disconnect(receiver)
        signals.job_failed.disconnect(broken_receiver)

    assert seen == [
        ("started", "job", "running"),
        ("succeeded", "job", "succeeded"),
        ("started", "job", "running"),
        ("failed", "job", "failed"),
        ("missed", "job", "missed"),
    ]
    assert Execution.objects.filter(status="failed").count() == 1


@pytest.mark.urls("tests.health_check_urls")
@pytest.mark.django_db(transaction=True)  # django-health-check runs checks on its own threads
def test_django_health_check_reports_the_scheduler_beside_its_own_checks(client: Client) -> None:
    SchedulerInstance.objects.create(hostname="worker", pid=1, role="standby")

    down = client.get("/ht/?format=json")

    assert down.status_code == 500
    timeout = f"{settings.HEARTBEAT_TIMEOUT:g}"
    assert down.json() == {
        "Database(alias='default')": "OK",
        "Scheduler()": f"Unavailable: No active scheduler has beaten in the last {timeout} s",
    }

    SchedulerInstance.objects.create(hostname="worker", pid=2, role="active")
    up = client.get("/ht/?format=json")
    assert up.status_code == 200
    assert up.json() == {"Database(alias='default')": "OK", "Scheduler()": "OK"}
