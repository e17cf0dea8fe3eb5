from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import django
import pytest
from django.test import Client
from django.utils import timezone
from django.utils.log import AdminEmailHandler

from scheduling import signals
from scheduling.conf import settings
from scheduling.history.recorder import Recorder
from scheduling.models import Execution, SchedulerInstance
from scheduling.runs.threads import run_job
from tests.conftest import ROOT
from tests.support import jobs
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


def test_health_is_a_json_503_without_details_when_the_database_is_unreachable() -> None:
    # A real unreachable database: nothing listens on port 1. DEBUG on, as in the demo, must not
    # turn the failure into a debug page with a traceback for anonymous callers.
    probe = (
        "import django, json; django.setup(); from django.test import Client; "
        "response = Client().get('/scheduling/health/'); "
        "print(json.dumps([response.status_code, response['Content-Type'], response.content.decode()]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere",
        "DJANGO_DEBUG": "1",
        "DJANGO_ALLOWED_HOSTS": "testserver",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    status, content_type, body = json.loads(result.stdout.splitlines()[-1])
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {
        "status": "unavailable",
        "active_scheduler": None,
        "last_beat": None,
        "standbys": None,
        "reason": "The database cannot be read",
    }
    assert "127.0.0.1" not in body


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


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_mails_the_admins_its_traceback_through_a_logging_entry_alone(
    settings, mailoutbox: list
) -> None:
    # Django 6 takes addresses; 5.2 (name, address) pairs.
    settings.ADMINS = ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]
    handler = AdminEmailHandler()
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger("scheduling")
    logger.addHandler(handler)
    try:
        run_job(make_job(jobs.succeed), [datetime.now(UTC)], Recorder())
        run_job(make_job(jobs.fail), [datetime.now(UTC) + timedelta(microseconds=1)], Recorder())
    finally:
        logger.removeHandler(handler)

    (mail,) = mailoutbox
    assert mail.to == ["ops@example.com"]
    assert "Job job failed after" in mail.subject
    assert "ValueError: this job fails on purpose" in mail.subject
    assert 'raise ValueError("this job fails on purpose")' in mail.body


@pytest.mark.urls("tests.support.health_check_urls")
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
