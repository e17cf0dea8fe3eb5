"""Alerts: a failing, missed, skipped, slow or silent job raises one alert, delivered by mail, a
webhook (JSON or Slack's body) and the log without ever blocking the scheduler, tried again with
backoff, rate-limited, and its recovery announced once."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django
import pytest
import time_machine
from django.db import DatabaseError, connection
from django.db.models import QuerySet
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling import checks as scheduling_checks
from scheduling import job, signals
from scheduling.declarations import JobDeclarationError
from scheduling.fencing import Fence
from scheduling.history import alerts
from scheduling.history.housekeeping import expire_task_runs, prune, recover_interrupted
from scheduling.models import (
    Alert,
    AlertAttempt,
    AlertDelivery,
    Execution,
    Maintenance,
    ScheduledJob,
    SchedulerInstance,
)
from scheduling.placement import RunsIn
from scheduling.policy import shown_destination
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime import alert_watch
from scheduling.runtime.alert_watch import AlertWatch, deliver_due
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.service import Runner
from scheduling.schedules import format_local
from scheduling.store import JobStore, policies_of
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.sinks import smtp_sink, webhook_receiver
from tests.support.task_worker import work_off

pytestmark = pytest.mark.django_db(transaction=True)

Status = Execution.Status
Rule = Alert.Rule
Delivery = AlertDelivery.Status
FAILED = "Job flaky failed: ValueError: this job fails on purpose"


def fire(registry: dict, dispatcher: Dispatcher, *job_ids: str, late: float = 30.1) -> None:
    """One fire of each of ``job_ids``, due ``late`` seconds ago (the others stay where they are)."""
    store = dispatcher.store
    sync(store, registry.values())
    stored = store.get_jobs_by_id(job_ids)
    for due in stored:
        due.next_run_time -= timedelta(seconds=late)
    store.update_jobs(stored)
    now = datetime.now(UTC)
    due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
    dispatcher.dispatch(due, now)


def ended(dispatcher: Dispatcher, job_id: str, count: int) -> list[Execution]:
    """Wait until ``job_id`` has ``count`` runs that ended, and the threads that ran them are
    done (their signals, so their alerts, included); returns the runs, oldest first."""

    def found() -> list[Execution] | None:
        rows = list(Execution.objects.filter(job_id=job_id).finished().order_by("pk"))
        return rows if len(rows) >= count else None

    rows = wait_for(found, timeout=20)
    threads = dispatcher.targets[RunsIn.THREADS]
    assert isinstance(threads, ThreadTarget)
    assert threads.wait(20)
    return rows


def raised(job_id: str) -> QuerySet[Alert]:
    return Alert.objects.filter(job_id=job_id).order_by("pk")


# End to end: a failing job's alert reaches a mail server, a webhook, Slack and the log


def smtp_settings(port: int) -> dict[str, Any]:
    """Django's SMTP backend aimed at the sink, and ops@example.com as the admin: MAILERS and
    ADMINS as plain addresses from Django 6.1 (EMAIL_BACKEND and (name, address) pairs are
    deprecated there), the EMAIL_* settings and pairs before."""
    backend = "django.core.mail.backends.smtp.EmailBackend"
    if django.VERSION >= (6, 1):
        options = {"host": "127.0.0.1", "port": port}
        return {
            "MAILERS": {"default": {"BACKEND": backend, "OPTIONS": options}},
            "ADMINS": ["ops@example.com"],
        }
    return {
        "EMAIL_BACKEND": backend,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": port,
        "ADMINS": [("Ops", "ops@example.com")],
    }


@pytest.fixture
def watch() -> Iterator[AlertWatch]:
    """The scheduler's alert thread, leading."""
    running = AlertWatch(leading=lambda: True)
    running.start()
    yield running
    running.stop()


def test_a_failing_jobs_alert_reaches_the_mail_server_the_webhooks_and_the_log(
    registry: dict, dispatcher: Dispatcher, watch: AlertWatch, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        smtp_sink() as smtp,
        webhook_receiver() as hook,
        override_settings(
            **smtp_settings(smtp.server_address[1]),
            SERVER_EMAIL="scheduler@example.com",
        ),
    ):
        to = ["mail_admins", "oncall@example.com", f"{hook.url}/json", f"slack:{hook.url}/slack", "log"]
        job(interval=30, id="flaky", alert={"to": to})(jobs.fail)
        fire(registry, dispatcher, "flaky")
        [run] = ended(dispatcher, "flaky", 1)

        wait_for(lambda: len(smtp.messages) == 2 and len(hook.posts) == 2, timeout=30)
        mails = {tuple(recipients): message for recipients, message in smtp.messages}
        assert set(mails) == {("ops@example.com",), ("oncall@example.com",)}
        message = mails[("oncall@example.com",)]
        assert message["Subject"] == "[scheduling] Failed: flaky"
        assert FAILED in message.get_content()
        posts = {post.path: json.loads(post.body) for post in hook.posts}
        assert posts["/json"] == {
            "alert": raised("flaky").get().pk,
            "job": "flaky",
            "rule": "failure",
            "message": FAILED,
            "run": run.pk,
            "raised_at": posts["/json"]["raised_at"],
        }
        assert posts["/slack"] == {"text": f"*[scheduling] Failed: flaky*\n{FAILED}"}
        wait_for(lambda: AlertDelivery.objects.filter(status=Delivery.SENT).count() == 5)
    logged = [record for record in caplog.records if record.name == "scheduling.alerts"]
    assert [(record.levelno, record.getMessage()) for record in logged] == [
        (logging.ERROR, f"[scheduling] Failed: flaky: {FAILED}")
    ]


# Which runs raise what


def test_failures_in_a_row_alert_once_at_the_nth_and_the_recovery_is_announced_once(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    job(interval=30, id="sync", alert={"to": ["log"], "after_failures": 3}, args=[str(calls), 4])(
        jobs.fail_until
    )
    for count in range(1, 5):
        fire(registry, dispatcher, "sync")
        ended(dispatcher, "sync", count)
        assert raised("sync").count() == (0 if count < 3 else 1)
    [failing] = raised("sync")
    assert failing.message.startswith("Job sync failed 3 times in a row; the last time: ConnectionError")
    assert failing.open
    alerts.look(silences=False)
    assert raised("sync").count() == 1  # no success yet: still failing

    fire(registry, dispatcher, "sync")
    [_, _, _, _, success] = ended(dispatcher, "sync", 5)
    assert success.status == Status.SUCCEEDED
    alerts.look(silences=False)
    alerts.look(silences=False)
    [_, recovered] = raised("sync")
    assert (recovered.rule, recovered.message) == (
        Rule.RECOVERED,
        f"Job sync recovered: run {success.pk} succeeded",
    )
    assert not Alert.objects.filter(open=True).exists()


def test_a_failure_whose_retry_is_pending_does_not_alert_and_its_last_attempt_does(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    job(interval=30, id="sync", retries=1, retry_backoff=0, alert={"to": ["log"]}, args=[str(calls), 5])(
        jobs.fail_until
    )
    fire(registry, dispatcher, "sync")
    wait_for(lambda: Execution.objects.filter(job_id="sync", retry_at__isnull=False).exists())
    assert dispatcher.targets[RunsIn.THREADS].wait(20)  # type: ignore[attr-defined]
    assert not raised("sync").exists()
    dispatcher.run_retries(datetime.now(UTC))
    ended(dispatcher, "sync", 2)
    [alert] = raised("sync")
    assert alert.execution_id == Execution.objects.get(job_id="sync", attempt=2).pk


def test_missed_and_skipped_fires_alert_but_a_maintenance_pause_does_not(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job(interval=30, id="late", misfire_grace_time=1, alert={"to": ["log"], "on": ["missed"]})(jobs.succeed)
    job(interval=30, id="busy", alert={"to": ["log"], "on": ["skipped"]}, args=[str(release), 20])(
        jobs.wait_for_file
    )
    fire(registry, dispatcher, "late", late=40)
    [missed] = raised("late")
    assert missed.rule == Rule.MISSED
    assert missed.message.startswith("Job late missed a fire (")

    fire(registry, dispatcher, "busy")
    fire(registry, dispatcher, "busy")  # the first run is still going
    [skipped] = raised("busy")
    assert skipped.rule == Rule.SKIPPED
    assert "the previous run was still going" in skipped.message
    release.touch()
    ended(dispatcher, "busy", 2)

    Maintenance.objects.create(on=True, reason="migration", by="alice", since=timezone.now())
    fire(registry, dispatcher, "busy")
    assert Execution.objects.filter(job_id="busy", status=Status.SKIPPED).count() == 2
    assert raised("busy").count() == 1


def test_a_job_without_a_success_within_its_window_alerts_once_under_a_shifted_clock(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="nightly", alert={"to": ["log"], "no_success_within": 3600})(jobs.succeed)
    fire(registry, dispatcher, "nightly")
    [success] = ended(dispatcher, "nightly", 1)
    alerts.look()
    assert not raised("nightly").exists()
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=1), tick=False):
        alerts.look()
        alerts.look()
    [silent] = raised("nightly")
    assert silent.rule == Rule.NO_SUCCESS
    assert silent.message.startswith("Job nightly has not succeeded within 1 h (last success: ")
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=2)):
        fire(registry, dispatcher, "nightly")
        ended(dispatcher, "nightly", 2)
        alerts.look()
    assert [alert.rule for alert in raised("nightly")] == [Rule.NO_SUCCESS, Rule.RECOVERED]
    assert raised("nightly")[1].execution_id != success.pk  # the new success recovered it


def test_a_run_going_on_longer_than_its_limit_alerts_once(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job(interval=30, id="slow", alert={"to": ["log"], "longer_than": 60}, args=[str(release), 20])(
        jobs.wait_for_file
    )
    fire(registry, dispatcher, "slow")
    run = wait_for(lambda: Execution.objects.filter(job_id="slow", status=Status.RUNNING).first())
    alerts.look()
    assert not raised("slow").exists()
    alerts.look(timezone.now() + timedelta(seconds=61))
    alerts.look(timezone.now() + timedelta(seconds=62))
    [slow] = raised("slow")
    assert (slow.rule, slow.execution_id) == (Rule.LONG_RUN, run.pk)
    release.touch()
    ended(dispatcher, "slow", 1)


def test_a_run_going_on_k_times_longer_than_usual_alerts_once_the_job_has_a_usual_duration(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    # With a limit in seconds too, far off: the usual duration is judged all the same.
    alert = {"to": ["log"], "longer_than_usual": 3, "longer_than": 3600}
    job(interval=30, id="etl", alert=alert, args=[str(release), 30])(jobs.wait_for_file)
    sync(JobStore(), registry.values())

    def succeeded(count: int, seconds: float) -> None:
        now = timezone.now()
        Execution.objects.bulk_create(
            Execution(
                job_id="etl",
                status=Status.SUCCEEDED,
                scheduled_at=now - timedelta(hours=count - number),
                finished_at=now - timedelta(hours=count - number),
                duration=seconds,
            )
            for number in range(count)
        )

    # 19 successes: no usual duration yet, so even a run going for ten minutes is not judged.
    succeeded(alerts.USUAL_RUNS - 1, 10.0)
    fire(registry, dispatcher, "etl")
    run = wait_for(lambda: Execution.objects.filter(job_id="etl", status=Status.RUNNING).first())
    alerts.look(timezone.now() + timedelta(minutes=10))
    assert not raised("etl").exists()
    # Twenty: the median (10 s: one slow outlier of 600 s among them changes nothing) times 3.
    succeeded(1, 600.0)
    alerts.look(timezone.now() + timedelta(seconds=29))
    assert not raised("etl").exists()
    alerts.look(timezone.now() + timedelta(seconds=31))
    alerts.look(timezone.now() + timedelta(seconds=40))
    [slow] = raised("etl")
    assert (slow.rule, slow.execution_id) == (Rule.LONG_RUN, run.pk)
    assert re.search(rf"run {run.pk} is still going after 3\d s, over 3 times its usual 10 s", slow.message)
    assert "the median of its last 20 successes" in slow.message
    release.touch()
    ended(dispatcher, "etl", 1)


def test_usual_durations_are_one_query_for_any_number_of_jobs() -> None:
    now = timezone.now()
    Execution.objects.bulk_create(
        Execution(
            job_id=f"job-{number % 3}",
            status=Status.SUCCEEDED if number % 7 else Status.FAILED,
            scheduled_at=now - timedelta(minutes=number),
            finished_at=now - timedelta(minutes=number),
            # Older successes are slow: were more than the newest 20 counted, the medians would be 1000.
            duration=float(number % 3 + 1) if number < 60 else 1000.0,
        )
        for number in range(200)
    )
    with CaptureQueriesContext(connection) as queries:
        usual = alerts.usual_durations({"job-0", "job-1", "job-2", "job-3"})
    assert len(queries) == 1
    assert usual == {"job-0": 1.0, "job-1": 2.0, "job-2": 3.0}  # job-3 has no success at all


def test_a_failure_in_a_task_worker_alerts_from_the_worker(registry: dict, dispatcher: Dispatcher) -> None:
    job(interval=30, id="remote", runs_in="tasks", alert={"to": ["log"]})(jobs.fail)
    fire(registry, dispatcher, "remote")
    work_off()
    [alert] = raised("remote")
    assert alert.execution_id == Execution.objects.get(job_id="remote").pk


@override_settings(SCHEDULING_ALERTS={"to": ["log"], "on": ["failure"]})
def test_the_sites_alerts_apply_to_jobs_without_their_own_and_to_nothing_turns_them_off(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="plain")(jobs.fail)
    job(interval=30, id="quiet", alert={"to": []})(jobs.fail)
    fire(registry, dispatcher, "plain", "quiet")
    ended(dispatcher, "plain", 1)
    ended(dispatcher, "quiet", 1)
    assert raised("plain").count() == 1
    assert not raised("quiet").exists()


# Delivery: rate limit, retries with backoff, giving up


def failure_alert(job_id: str = "flaky", execution_id: int = 1, to: tuple[str, ...] = ("log",)) -> Alert:
    policy = alerts.AlertPolicy(to=to)
    alert = alerts.raise_alert(job_id, Rule.FAILURE, f"failure:{execution_id}", "boom", policy, execution_id)
    assert alert is not None
    return alert


def test_a_second_alert_of_a_job_and_rule_within_the_interval_is_recorded_but_not_sent() -> None:
    first, second = failure_alert(execution_id=1), failure_alert(execution_id=2)
    again = alerts.raise_alert("flaky", Rule.FAILURE, "failure:2", "boom", alerts.AlertPolicy(to=("log",)), 2)
    assert again is None  # the same failure again: raised already
    assert first.deliveries.get().status == Delivery.PENDING
    assert second.deliveries.get().status == Delivery.SUPPRESSED
    with override_settings(SCHEDULING_ALERT_INTERVAL=0):
        third = failure_alert(execution_id=3)
    assert third.deliveries.get().status == Delivery.PENDING


def test_a_webhook_that_fails_is_tried_again_with_backoff_then_given_up() -> None:
    with webhook_receiver() as hook:
        hook.status = 500
        alert = failure_alert(to=(hook.url,))
        assert deliver_due() == 0
        delivery = alert.deliveries.get()
        assert (delivery.status, delivery.attempts) == (Delivery.PENDING, 1)
        # The URL's path is its secret: the error, which the admin shows, names the host only.
        assert delivery.last_error == f"RuntimeError: {hook.url}/… answered 500 Internal Server Error"
        assert delivery.next_attempt_at is not None
        assert 29 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 30
        assert deliver_due() == 0  # not due yet

        hook.status = 200
        AlertDelivery.objects.update(next_attempt_at=timezone.now())
        assert deliver_due() == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_error) == (Delivery.SENT, 2, "")

        hook.status = 503
        again = failure_alert("other", 9, (hook.url,))
        for _ in range(8):
            AlertDelivery.objects.filter(status=Delivery.PENDING).update(next_attempt_at=timezone.now())
            deliver_due()
        given_up = again.deliveries.get()
        assert (given_up.status, given_up.attempts) == (Delivery.FAILED, 8)
    # Every attempt is on record, not only the last: when it was made and what stopped it.
    log = list(delivery.attempt_log.values_list("number", "error"))
    assert log == [(1, f"RuntimeError: {hook.url}/… answered 500 Internal Server Error"), (2, "")]
    errors = list(given_up.attempt_log.values_list("number", "error"))
    refused = f"RuntimeError: {hook.url}/… answered 503 Service Unavailable"
    assert errors == [(number, refused) for number in range(1, 9)]
    assert all(item.at is not None for item in given_up.attempt_log.all())


def test_mail_admins_without_admins_is_a_failed_attempt_naming_the_setting() -> None:
    alert = failure_alert(to=("mail_admins",))
    with override_settings(ADMINS=[]):
        deliver_due()
    assert alert.deliveries.get().last_error == (
        "RuntimeError: settings.ADMINS is empty: mail_admins has nobody to write to"
    )


# Nothing on the path of a run that went well


def test_a_success_and_a_cancel_cost_no_statement(
    django_assert_num_queries: Any, registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="fine", alert={"to": ["log"], "on": ["failure", "missed", "skipped"]})(jobs.succeed)
    sync(dispatcher.store, registry.values())
    run = Execution(pk=1, job_id="fine", status=Status.SUCCEEDED, scheduled_at=timezone.now())
    with django_assert_num_queries(0):
        signals.notify(signals.job_succeeded, run)
        run.status = Status.CANCELLED
        signals.notify(signals.job_failed, run)


# Declared, changed and shown


def test_an_alert_option_is_checked_where_it_is_given(registry: dict, admin_client: Client) -> None:
    with pytest.raises(JobDeclarationError, match=r"alert.to\[1\] must be mail_admins, log, an e-mail"):
        job(interval=30, id="bad", alert={"to": ["log", "ftp://x"]})(jobs.succeed)
    with pytest.raises(JobDeclarationError, match="unknown alert option when; known: to, on"):
        job(interval=30, id="bad", alert={"to": ["log"], "when": 1})(jobs.succeed)
    with pytest.raises(
        JobDeclarationError, match=r"alert\.on must be a list of distinct events among failure"
    ):
        job(interval=30, id="bad", alert={"to": ["log"], "on": ["boom"]})(jobs.succeed)
    job(interval=30, id="report")(jobs.succeed)
    sync(JobStore(), registry.values())

    url = "/scheduling/api/jobs/report/reschedule/"
    response = admin_client.post(url, {"alert": {"to": ["x"]}}, content_type="application/json")
    assert (response.status_code, response.json()["field"]) == (400, "alert.to[0]")
    for factor in (1.2, 101, "3", True):
        given = {"alert": {"to": ["log"], "longer_than_usual": factor}}
        response = admin_client.post(url, given, content_type="application/json")
        assert (response.status_code, response.json()["field"]) == (400, "alert.longer_than_usual"), factor
        assert "from 1.5 to 100 (times the usual duration)" in response.json()["error"]
    alert = {"to": ["ops@example.com"], "on": ["failure", "missed"], "no_success_within": 7200}
    response = admin_client.post(url, {"alert": alert}, content_type="application/json")
    assert response.status_code == 200, response.content
    stored = policies_of(["report"])["report"].alert
    assert stored is not None
    assert (stored.to, stored.on, stored.no_success_within) == (
        ("ops@example.com",),
        ("failure", "missed"),
        7200,
    )
    assert admin_client.get("/scheduling/api/jobs/report/").json()["alert"]["to"] == ["ops@example.com"]

    messages = scheduling_checks.alerts_setting_messages({"to": "mail_admins"})
    assert [message.id for message in messages] == ["scheduling.E006"]
    assert scheduling_checks.alerts_setting_messages({"to": ["mail_admins"]}) == []


def test_the_jobs_page_edits_its_alerts_and_shows_them_with_their_deliveries(
    registry: dict, admin_client: Client
) -> None:
    job(interval=30, id="report")(jobs.succeed)
    sync(JobStore(), registry.values())
    page = "/admin/scheduling/job/report/change/"
    form = admin_client.get(page).context["adminform"].form
    assert form.initial["alerts"] == "site"
    data = {name: value for name, value in form.initial.items() if value is not None and name != "alert"}
    data.update(kind="interval", every=30, unit="seconds", coalesce="on", calendars=[])
    data.update(alerts="own", alert_to="log\nops@example.com", alert_on=["failure"], alert_after_failures=2)
    data.update(alert_longer_than_usual="1.2")
    errors = admin_client.post(page, data).context["adminform"].form.errors
    assert "a number from 1.5 to 100" in errors["alert_longer_than_usual"][0]
    data.update(alert_longer_than_usual="2.5")
    response = admin_client.post(page, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = policies_of(["report"])["report"].alert
    assert stored is not None
    assert (stored.to, stored.after_failures, stored.longer_than_usual) == (
        ("log", "ops@example.com"),
        2,
        2.5,
    )
    assert admin_client.get(page).context["adminform"].form.initial["alert_longer_than_usual"] == 2.5
    data.update(alerts="own", alert_to="")
    errors = admin_client.post(page, data).context["adminform"].form.errors
    assert errors["alert_to"] == ["Give at least one destination, or choose 'none'."]
    data.update(alerts="off")
    assert admin_client.post(page, data).status_code == 302
    assert policies_of(["report"])["report"].alert == alerts.AlertPolicy(to=())

    failure_alert("report", 0, ("log", "ops@example.com"))
    with CaptureQueriesContext(connection) as one:
        admin_client.get(page)
    for number in range(1, 3):
        failure_alert("report", number, ("log", "ops@example.com"))
    AlertDelivery.objects.filter(destination="log").update(status=Delivery.SENT, attempts=1)
    first = AlertDelivery.objects.filter(destination="ops@example.com").order_by("pk")[0]
    AlertDelivery.objects.filter(pk=first.pk).update(attempts=2, last_error="SMTPConnectError: <refused>")
    at = timezone.now()
    for delivery in AlertDelivery.objects.all():
        AlertAttempt.objects.create(delivery=delivery, number=1, at=at, error="SMTPConnectError: <refused>")
        AlertAttempt.objects.create(delivery=delivery, number=2, at=at)
    with CaptureQueriesContext(connection) as three:
        shown = admin_client.get(page).content.decode()
    assert len(three) == len(one)  # alerts, deliveries, attempts: three queries, however many
    assert shown.count("log: Sent") == 3
    assert "ops@example.com: Waiting to be sent (2 attempts, SMTPConnectError: &lt;refused&gt;)" in shown
    tried = format_local(at)
    assert shown.count(f"<li>{tried}: SMTPConnectError: &lt;refused&gt;</li><li>{tried}: sent</li>") == 6
    assert "ops@example.com: Not sent: too soon after the last one (rate limit)" in shown


def test_pruning_deletes_old_alerts_with_their_deliveries_but_keeps_an_open_one() -> None:
    old, still_open, recent = (
        failure_alert(execution_id=1),
        failure_alert(execution_id=2),
        failure_alert("b", 3),
    )
    month_ago = timezone.now() - timedelta(days=31)
    Alert.objects.filter(pk__in=[old.pk, still_open.pk]).update(raised_at=month_ago)
    Alert.objects.filter(pk=still_open.pk).update(open=True)
    AlertAttempt.objects.create(delivery=old.deliveries.get(), number=1, at=month_ago, error="refused")
    prune()
    assert set(Alert.objects.values_list("pk", flat=True)) == {still_open.pk, recent.pk}
    assert not AlertDelivery.objects.filter(alert_id=old.pk).exists()
    assert not AlertAttempt.objects.exists()


# Found by review: each a case that went wrong before its fix


def test_failures_in_a_row_count_fires_not_attempts(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    alert = {"to": ["log"], "after_failures": 2}
    job(interval=30, id="sync", retries=1, retry_backoff=0, alert=alert, args=[str(calls), 10])(
        jobs.fail_until
    )
    for fire_number in (1, 2):
        fire(registry, dispatcher, "sync")
        wait_for(lambda: Execution.objects.filter(job_id="sync", retry_at__isnull=False).exists())
        # The failed attempt's thread gives its max_instances slot back after its outcome is
        # written; a retry started before then would wait for a later pass.
        assert dispatcher.targets[RunsIn.THREADS].wait(20)  # type: ignore[attr-defined]
        dispatcher.run_retries(datetime.now(UTC))
        ended(dispatcher, "sync", 2 * fire_number)
        # Two failed attempts of the first fire are one failure, not two in a row.
        assert raised("sync").count() == fire_number - 1
    [alert_raised] = raised("sync")
    assert alert_raised.message.startswith("Job sync failed 2 times in a row")


def test_a_recovery_closes_only_the_alerts_raised_before_its_success() -> None:
    base = timezone.now() - timedelta(minutes=10)
    policy = alerts.AlertPolicy(to=("log",))
    ScheduledJob.objects.create(id="sync", source="code", run_policy={"alert": policy.stored()})
    before = alerts.raise_alert("sync", Rule.FAILURE, "failure:1", "x", policy, 1, opens=True, at=base)
    Execution.objects.create(
        job_id="sync",
        scheduled_at=base,
        status=Status.SUCCEEDED,
        finished_at=base + timedelta(minutes=1),
    )
    after = alerts.raise_alert(
        "sync", Rule.FAILURE, "failure:3", "y", policy, 3, opens=True, at=base + timedelta(minutes=2)
    )
    assert before is not None
    assert after is not None
    alerts.look(silences=False)
    assert set(Alert.objects.filter(open=True).values_list("pk", flat=True)) == {after.pk}
    assert raised("sync").filter(rule=Rule.RECOVERED).count() == 1


def test_an_alert_that_comes_once_an_incident_is_never_rate_limited() -> None:
    failure_alert(execution_id=1)
    streak = alerts.raise_alert(
        "flaky", Rule.FAILURE, "failure:2", "again", alerts.AlertPolicy(to=("log",)), 2, limited=False
    )
    assert streak is not None
    assert streak.deliveries.get().status == Delivery.PENDING


def test_a_scheduler_that_lost_its_lease_claims_no_delivery_and_sends_nothing() -> None:
    with webhook_receiver() as hook:
        alert = failure_alert(to=(hook.url,))
        assert deliver_due(Fence(uuid.uuid4(), 3)) == 0
        assert hook.posts == []
        assert alert.deliveries.get().attempts == 0


def test_a_webhook_answering_with_a_redirect_is_not_followed() -> None:
    with webhook_receiver() as hook:
        hook.status = 302
        alert = failure_alert(to=(f"{hook.url}/secret-path",))
        assert deliver_due() == 0
        assert [post.path for post in hook.posts] == ["/secret-path"]
        assert alert.deliveries.get().last_error.endswith("/… answered 302 Found")


def test_webhook_urls_are_shown_by_their_host_only_and_a_shortened_one_is_refused(
    registry: dict, admin_client: Client
) -> None:
    assert shown_destination("https://hooks.slack.com/services/T0/B0/XYZ?x=1") == "https://hooks.slack.com/…"
    assert shown_destination("slack:http://chat:8065/hooks/abc") == "slack:http://chat:8065/…"
    assert shown_destination("ops@example.com") == "ops@example.com"
    job(interval=30, id="report", alert={"to": ["https://hooks.example.com/T0/secret"]})(jobs.succeed)
    sync(JobStore(), registry.values())
    assert admin_client.get("/scheduling/api/jobs/report/").json()["alert"]["to"] == [
        "https://hooks.example.com/…"
    ]
    failure_alert("report", 1, ("https://hooks.example.com/T0/secret",))
    page = admin_client.get("/admin/scheduling/job/report/change/").content.decode()
    assert "https://hooks.example.com/…: Waiting to be sent" in page
    url = "/scheduling/api/jobs/report/reschedule/"
    response = admin_client.post(
        url, {"alert": {"to": ["https://hooks.example.com/…"]}}, content_type="application/json"
    )
    assert (response.status_code, response.json()["field"]) == (400, "alert.to[0]")


def test_a_failure_the_outcome_update_turned_into_a_cancel_raises_no_alert(registry: dict) -> None:
    job(interval=30, id="sync", alert={"to": ["log"]})(jobs.fail)
    sync(JobStore(), registry.values())
    run = Execution.objects.create(
        job_id="sync", scheduled_at=timezone.now(), status=Status.CANCELLED, finished_at=timezone.now()
    )
    run.status = Status.FAILED  # what the run's own process believes
    alerts.receiver.failed("sync", run)
    assert not raised("sync").exists()


def test_a_second_look_at_a_silent_job_tries_no_insert(registry: dict, dispatcher: Dispatcher) -> None:
    job(interval=30, id="nightly", alert={"to": ["log"], "no_success_within": 60})(jobs.succeed)
    sync(JobStore(), registry.values())
    later = timezone.now() + timedelta(minutes=2)
    alerts.look(later)
    assert raised("nightly").count() == 1
    with CaptureQueriesContext(connection) as second:
        alerts.look(later)
    assert not [query for query in second if query["sql"].lstrip().upper().startswith("INSERT")]


def failed_runs(job_id: str, count: int) -> list[Execution]:
    now = timezone.now()
    return [
        Execution.objects.create(
            job_id=job_id,
            scheduled_at=now - timedelta(minutes=number),
            status=Status.FAILED,
            finished_at=now,
            exception=f"boom {number}",
        )
        for number in range(count)
    ]


def receiver_that_saw_failures(registry: dict) -> tuple[alerts.Receiver, list[Execution]]:
    """A receiver as a scheduler's (deferred) that was told of three failed runs of job sync."""
    job(interval=30, id="sync", alert={"to": ["log"]})(jobs.fail)
    sync(JobStore(), registry.values())
    receiver = alerts.Receiver()
    receiver.deferred = True
    runs = failed_runs("sync", 3)
    for run in runs:
        receiver.failed("sync", run)
    return receiver, runs


def test_a_receiver_whose_database_fails_keeps_what_it_saw_for_the_next_look(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, runs = receiver_that_saw_failures(registry)
    real = alerts._raise_for_run
    calls = []

    def second_fails(rule: str, execution: Execution, policy: alerts.AlertPolicy) -> None:
        calls.append(execution.pk)
        if len(calls) == 2:
            raise DatabaseError("the connection dropped")
        real(rule, execution, policy)

    monkeypatch.setattr(alerts, "_raise_for_run", second_fails)
    with pytest.raises(DatabaseError):
        receiver.drain()
    # The first was raised; the second and third wait, in order, for the next look.
    assert [item.execution.pk for item in receiver.queue] == [runs[1].pk, runs[2].pk]
    receiver.drain()
    assert not receiver.queue
    assert set(raised("sync").values_list("execution_id", flat=True)) == {run.pk for run in runs}


def test_one_run_whose_alert_cannot_be_raised_holds_back_no_other(
    registry: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    receiver, runs = receiver_that_saw_failures(registry)
    real = alerts._raise_for_run

    def first_breaks(rule: str, execution: Execution, policy: alerts.AlertPolicy) -> None:
        if execution.pk == runs[0].pk:
            raise ValueError("a row that cannot be described")
        real(rule, execution, policy)

    monkeypatch.setattr(alerts, "_raise_for_run", first_breaks)
    with caplog.at_level(logging.ERROR, logger="scheduling.history.alerts"):
        receiver.drain()
    assert "Job sync: could not raise its alert" in caplog.text
    assert set(raised("sync").values_list("execution_id", flat=True)) == {run.pk for run in runs[1:]}
    assert not receiver.queue


def test_a_delivery_queued_by_another_process_is_sent_at_the_leaders_next_heartbeat(registry: dict) -> None:
    runner = Runner(threads=2)
    runner.start()
    try:
        wait_for(lambda: runner.active)
        with webhook_receiver() as hook:
            # As a task worker queues it: in the database only, nothing in this process is told.
            alert = Alert.objects.create(key="k", job_id="flaky", rule=Rule.FAILURE, message="boom")
            AlertDelivery.objects.create(alert=alert, destination=hook.url, next_attempt_at=timezone.now())
            # Tests beat every second; the look for silences alone comes once a minute.
            wait_for(lambda: hook.posts, timeout=10)
        assert alert.deliveries.get().status == Delivery.SENT
    finally:
        runner.stop(timeout=5)


def test_runs_recorded_interrupted_alert_as_failures_once_each(registry: dict) -> None:
    job(interval=30, id="crashy", alert={"to": ["log"]})(jobs.succeed)
    job(interval=30, id="placed", alert={"to": ["log"], "after_failures": 2})(jobs.succeed)
    sync(JobStore(), registry.values())
    gone = SchedulerInstance.objects.create(
        hostname="elsewhere", pid=1, last_beat=timezone.now() - timedelta(hours=1)
    )
    hour_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.create(job_id="crashy", status="running", scheduled_at=hour_ago, instance=gone)
    for minutes in (1, 2):  # a streak of two fires handed to a task worker that died
        Execution.objects.create(
            job_id="placed",
            status="running",
            ran_in="tasks",
            scheduled_at=hour_ago + timedelta(minutes=minutes),
            started_at=hour_ago + timedelta(minutes=minutes),
        )
    received: list[str] = []

    def failed(sender: str, execution: Execution, **kwargs: Any) -> None:
        received.append(f"{sender}:{execution.status}")

    signals.job_failed.connect(failed)
    try:
        assert recover_interrupted() == 1
        assert expire_task_runs(timeout=60) == 2
        assert recover_interrupted() == 0  # nothing left: nothing reported twice
    finally:
        signals.job_failed.disconnect(failed)

    assert sorted(received) == ["crashy:interrupted", "placed:interrupted", "placed:interrupted"]
    [crashed] = raised("crashy")
    assert (
        crashed.message == "Job crashy was interrupted: the scheduler running it stopped without finishing it"
    )
    [streak] = raised("placed")
    assert streak.message.startswith(
        "Job placed failed 2 times in a row; the last time: Interrupted: the task"
    )


def test_the_timed_look_checks_silences_every_time_however_long_the_previous_look_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks: list[bool] = []
    drains = iter(range(1_000_000))

    def drain() -> None:
        time.sleep(0.05 if next(drains) % 2 == 0 else 0.0)  # a look that raised alerts is slower

    monkeypatch.setattr(alert_watch, "SILENCE_LOOK_INTERVAL", 0.2)
    monkeypatch.setattr(alerts.receiver, "drain", drain)
    monkeypatch.setattr(alerts, "look", lambda now=None, silences=True: looks.append(silences))
    monkeypatch.setattr(alert_watch, "deliver_due", lambda fence=None: 0)
    watch = AlertWatch(leading=lambda: True)
    watch.start()
    try:
        wait_for(lambda: len(looks) >= 6)
    finally:
        watch.stop()
    assert all(looks), looks  # each wake of the timer looked at silences and runs too long
