"""Sentry Crons: each job a monitor, each run an in-progress check-in then ok or error with the
same id, sent from the process that runs the code, to a local stand-in for Sentry's ingest."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from apscheduler.triggers.date import DateTrigger
from django.utils import timezone

from scheduling import job
from scheduling.models import Execution
from scheduling.runs.call import call_job
from scheduling.runs.observers import sentry
from scheduling.runs.observers.base import RunFacts, facts_of
from scheduling.runs.observers.sentry import monitor_config, monitor_slug
from scheduling.runtime.dispatch import Dispatcher
from scheduling.schedules import build_trigger
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.sentry_ingest import SentryIngest
from tests.support.task_worker import work_off
from tests.test_tasks import make_due

Status = Execution.Status
HERE, CHILDREN = "1", "2"  # the projects of this process's DSN and of the processes it starts


@pytest.fixture
def ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[SentryIngest]:
    """Sentry on in this process and in the processes it starts (tests/settings.py reads the
    variable), each with a project of its own, all sending to the stand-in."""
    stand_in = SentryIngest()
    monkeypatch.setenv("SCHEDULING_TEST_SENTRY_DSN", stand_in.dsn(CHILDREN))
    sentry_sdk.init(dsn=stand_in.dsn(HERE), default_integrations=False, auto_enabling_integrations=False)
    yield stand_in
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    stand_in.close()


def dispatch_due(registry: dict, dispatcher: Dispatcher, period: float) -> None:
    """Make the declared jobs, whose next fire is at most ``period`` seconds away, due now (and
    not late by more than that), and dispatch them."""
    sync(dispatcher.store, registry.values())
    dispatcher.dispatch(make_due(dispatcher.store, seconds=period + 1), datetime.now(UTC))


def sequence(ingest: SentryIngest, slug: str) -> list[tuple[str, dict[str, Any]]]:
    """The two check-ins of a run, once both arrived (a child sends them on its own thread)."""
    sentry_sdk.flush()

    def both() -> list[tuple[str, dict[str, Any]]] | None:
        found = ingest.check_ins(slug)
        return found if len(found) >= 2 else None

    return wait_for(both, timeout=30)


# The monitor slug


def test_a_job_id_that_is_a_slug_already_is_its_monitor_slug() -> None:
    assert monitor_slug("nightly-report") == "nightly-report"
    assert monitor_slug("a" * 50) == "a" * 50


def test_any_other_job_id_is_made_a_slug_with_a_digest_of_the_id_so_no_two_jobs_share_one() -> None:
    dotted = monitor_slug("reports.jobs.Nightly_Report")
    assert dotted.startswith("reports-jobs-nightly-report-")
    assert dotted == monitor_slug("reports.jobs.Nightly_Report")  # stable: the same every time
    assert monitor_slug("a.b") != monitor_slug("a_b") != monitor_slug("A-b")
    for job_id in ("x" * 200, "ü" * 10, "--a--", "a" * 51, "Tasks:default:reports/Ω"):
        slug = monitor_slug(job_id)
        assert len(slug) <= 50, slug
        assert slug.strip("-") == slug
        assert all(char.isdigit() or "a" <= char <= "z" or char == "-" for char in slug), slug


# The monitor's configuration, from the declaration


def test_a_crontab_job_is_configured_with_its_line_zone_margin_and_max_runtime() -> None:
    trigger = build_trigger({"cron": "30 2 * * MON-FRI", "timezone": "Europe/Berlin"})
    config = monitor_config(facts_of(trigger, misfire_grace_time=90, timeout=3600, traceparent=None))
    assert config == {
        "schedule": {"type": "crontab", "value": "30 2 * * MON-FRI"},
        "timezone": "Europe/Berlin",
        "checkin_margin": 2,  # minutes, rounded up: a start up to 90 s late is not a miss
        "max_runtime": 60,
    }


def test_an_interval_is_given_in_its_largest_whole_unit_and_jitter_widens_the_margin() -> None:
    trigger = build_trigger({"interval": {"hours": 2}, "jitter": 120, "timezone": "UTC"})
    config = monitor_config(facts_of(trigger, misfire_grace_time=60, timeout=None, traceparent=None))
    assert config == {
        "schedule": {"type": "interval", "value": 2, "unit": "hour"},
        "timezone": "UTC",
        "checkin_margin": 3,
    }


def test_schedules_sentry_cannot_express_send_check_ins_without_a_configuration() -> None:
    seconds = build_trigger({"interval": {"seconds": 90}, "timezone": "UTC"})
    once = DateTrigger(timezone.now() + timedelta(days=1))
    assert monitor_config(facts_of(seconds, 60, None, None)) is None
    assert monitor_config(facts_of(once, 60, None, None)) is None
    assert monitor_config(None) is None


# Check-ins from whichever process runs the job


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("runs_in", "timeout", "sender"),
    [
        ("threads", None, HERE),
        ("processes", None, CHILDREN),
        ("tasks", None, HERE),  # a worker calls a job without a timeout itself
        ("tasks", 120, CHILDREN),  # and one with a timeout in a child of its own
    ],
)
def test_a_run_checks_in_in_progress_with_its_monitor_then_ok_with_the_same_id(
    registry: dict, ingest: SentryIngest, pooled: Dispatcher, runs_in: str, timeout: int | None, sender: str
) -> None:
    job(
        cron="*/5 * * * *",
        timezone="Europe/Berlin",
        misfire_grace_time=600,
        timeout=timeout,
        id="nightly-report",
        runs_in=runs_in,
    )(jobs.succeed)
    dispatch_due(registry, pooled, period=300)
    if runs_in == "tasks":
        work_off()
    wait_for(lambda: Execution.objects.filter(job_id="nightly-report", status=Status.SUCCEEDED).exists(), 60)

    (first_from, started), (last_from, ended) = sequence(ingest, "nightly-report")
    assert (first_from, last_from) == (sender, sender)
    assert started["status"] == "in_progress"
    expected = {
        "schedule": {"type": "crontab", "value": "*/5 * * * *"},
        "timezone": "Europe/Berlin",
        "checkin_margin": 10,
    }
    if timeout is not None:
        expected["max_runtime"] = 2
    assert started["monitor_config"] == expected
    assert ended["status"] == "ok"
    assert ended["check_in_id"] == started["check_in_id"]
    assert ended["duration"] >= 0
    assert "monitor_config" not in ended  # upserted once per run, with its start


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runs_in", ["threads", "processes", "tasks"])
def test_a_failed_run_checks_in_error(
    registry: dict, ingest: SentryIngest, pooled: Dispatcher, runs_in: str
) -> None:
    job(interval=3600, id="failing.job", runs_in=runs_in)(jobs.fail)
    dispatch_due(registry, pooled, period=3600)
    if runs_in == "tasks":
        work_off()
    wait_for(lambda: Execution.objects.filter(job_id="failing.job", status=Status.FAILED).exists(), 60)

    slug = monitor_slug("failing.job")
    (_, started), (_, ended) = sequence(ingest, slug)
    assert started["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "hour"}
    assert (started["status"], ended["status"]) == ("in_progress", "error")
    assert ended["check_in_id"] == started["check_in_id"]


# Best-effort


def test_a_check_in_that_fails_is_logged_and_the_run_goes_on(
    ingest: SentryIngest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_: Any) -> None:
        raise ConnectionError("the SDK broke")

    monkeypatch.setattr(sentry, "capture_checkin", broken)
    with caplog.at_level(logging.ERROR, logger="scheduling.runs.observers"):
        outcome = call_job("nightly-report", jobs.succeed, (), {}, RunFacts())
    assert outcome.status == Status.SUCCEEDED
    assert "Observer sentry: could not see job nightly-report start" in caplog.text


def test_without_a_configured_client_nothing_is_sent(ingest: SentryIngest) -> None:
    sentry_sdk.get_global_scope().set_client(None)
    call_job("nightly-report", jobs.succeed, (), {})
    sentry_sdk.flush()
    assert ingest.check_ins() == []


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_db_worker_process_checks_in_the_run_it_takes(
    registry: dict, ingest: SentryIngest, pooled: Dispatcher, scheduler_process: Any, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    job(interval=30, id="guarded", runs_in="tasks", args=[str(notes)])(jobs.note_process)
    dispatch_due(registry, pooled, period=30)
    worker = scheduler_process(
        "tests.support.process_jobs_guarded",  # declares the same job, as the worker's code would
        env={"TEST_NOTES_FILE": str(notes)},
        command="db_worker",
        started_text="Starting worker",
        args=["--interval", "0.05", "--no-startup-delay", "--no-reload", "--worker-id", "sentry"],
    )
    run = wait_for(lambda: Execution.objects.filter(job_id="guarded", status=Status.SUCCEEDED).first(), 60)
    assert run.pid == worker.popen.pid

    (first_from, started), (last_from, ended) = sequence(ingest, "guarded")
    assert (first_from, last_from) == (CHILDREN, CHILDREN)
    assert (started["status"], ended["status"]) == ("in_progress", "ok")
    assert ended["check_in_id"] == started["check_in_id"]
    assert "monitor_config" not in started  # every 30 s: Sentry has no seconds


def test_a_site_that_does_not_use_sentry_does_not_import_it_though_installed() -> None:
    # Importing sentry_sdk cost every scheduler start a quarter of a second (a third of Django's
    # set-up): it is looked for only among what the site imported, as sentry_sdk.init does.
    code = (
        "import sys, django; django.setup(); "
        "import scheduling.runtime.service, scheduling.management.commands.runscheduler; "
        "from scheduling.runs.observers import flush, observing; flush(0.1); observing(); "
        "print(sorted(name for name in sys.modules if name.startswith('sentry_sdk')))"
    )
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("SCHEDULING_TEST_SENTRY")
    } | {"DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
