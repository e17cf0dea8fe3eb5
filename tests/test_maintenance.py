"""The maintenance pause: no new runs while it is on, at every level an operator meets it."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from django_apscheduler.models import DjangoJob

from scheduling import control, job, tokens, validation
from scheduling.history.recorder import Recorder
from scheduling.models import Execution, Maintenance, RunRequest, SchedulerInstance
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off
from tests.test_dispatch import declare_due, kinds

API = "/scheduling/api"
UNTIL = datetime(2026, 12, 24, 6, 0, tzinfo=UTC)
REASON = "Skipped: paused for maintenance (DB migration), by alice, until 2026-12-24 06:00 UTC"


@pytest.fixture
def before_christmas() -> Iterator[None]:
    with time_machine.travel(datetime(2026, 12, 23, 22, 0, tzinfo=UTC), tick=True):
        yield


@pytest.fixture
def declared(registry: dict) -> None:
    job(cron="0 3 * * *", id="nightly")(jobs.succeed)
    sync(JobStore(), registry.values())


def user_with(*permissions: str, username: str = "operator", staff: bool = False) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=staff)
    for codename in permissions:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="scheduling")
        )
    return user


# The pause itself


@pytest.mark.django_db
def test_a_pause_needs_a_reason_and_an_until_in_the_future(before_christmas: None) -> None:
    with pytest.raises(validation.InputError, match="reason must say why") as empty:
        control.start_maintenance("  ", "alice")
    assert empty.value.field == "reason"
    with pytest.raises(validation.InputError, match="until must be a moment in the future") as past:
        control.start_maintenance("DB migration", "alice", until="2026-12-01T06:00")
    assert (past.value.field, past.value.code) == ("until", "date_in_past")
    with pytest.raises(validation.InputError, match="until must be an ISO 8601 date and time"):
        control.start_maintenance("DB migration", "alice", until="tomorrow")
    assert control.maintenance() is None


@pytest.mark.django_db
@override_settings(TIME_ZONE="Europe/Berlin")
def test_an_until_without_an_offset_is_read_in_the_sites_time_zone(before_christmas: None) -> None:
    pause = control.start_maintenance("DB migration", "alice", until="2026-12-24T07:00")

    assert pause.until == datetime(2026, 12, 24, 7, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert pause.skip_message == REASON


@pytest.mark.django_db
def test_the_pause_lifts_itself_at_until(declared: None, before_christmas: None) -> None:
    control.start_maintenance("DB migration", "alice", until=UNTIL)
    assert control.maintenance() is not None
    with pytest.raises(control.MaintenanceError):
        control.run_now("nightly")

    with time_machine.travel(UNTIL + timedelta(seconds=1)):
        assert control.maintenance() is None
        assert control.run_now("nightly").force is False

    # The next "on" replaces the expired pause, with a new since.
    again = control.start_maintenance("Backup", "bob")
    assert (again.reason, again.by, again.until) == ("Backup", "bob", None)
    assert Maintenance.objects.count() == 1


# The dispatcher


@pytest.mark.django_db(transaction=True)
def test_while_paused_each_due_fire_is_recorded_skipped_with_the_reason_and_the_jobs_move_on(
    registry: dict, executor: ThreadTarget
) -> None:
    store = declare_due(registry, 3)
    Maintenance.objects.create(
        on=True, reason="DB migration", by="alice", since=timezone.now(), until=UNTIL + timedelta(days=3650)
    )
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = datetime.now(UTC)

    with CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
        next_run_time = dispatcher.dispatch(due, now)

    # The due query, then the pause itself (read only because the due query saw one), the
    # skipped rows and the moves: a pass while paused costs one statement more than a run.
    assert kinds(queries) == {"SELECT": 2, "INSERT": 1, "UPDATE": 1}
    rows = list(Execution.objects.all())
    assert len(rows) == 3
    assert {row.status for row in rows} == {"skipped"}
    assert {row.exception for row in rows} == {
        "Skipped: paused for maintenance (DB migration), by alice, until 2036-12-21 06:00 UTC"
    }
    assert executor.running == 0
    assert next_run_time is not None
    assert next_run_time > now
    assert DjangoJob.objects.filter(next_run_time__lte=now).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_pause_past_its_until_is_off_for_the_dispatcher(registry: dict, executor: ThreadTarget) -> None:
    store = declare_due(registry, 1)
    Maintenance.objects.create(on=True, reason="DB migration", by="alice", until=timezone.now())
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = datetime.now(UTC)

    with CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
        dispatcher.dispatch(due, now)

    assert kinds(queries) == {"SELECT": 1, "INSERT": 1, "UPDATE": 1}, "no statement more than a run"
    assert executor.wait(10)
    assert Execution.objects.get().status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_coalescing_job_far_behind_coalesces_as_ever_and_its_last_fire_is_skipped(
    registry: dict, executor: ThreadTarget
) -> None:
    job(interval={"seconds": 10}, id="behind", coalesce=True)(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    behind = store.get_all_jobs()[0]
    behind.next_run_time -= timedelta(seconds=35)
    store.update_jobs([behind])
    control.start_maintenance("DB migration", "alice")
    now = datetime.now(UTC)

    Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(
        store.get_due_jobs_and_next_run_time(now, limit=10)[0], now
    )

    rows = list(Execution.objects.order_by("scheduled_at"))
    assert len(rows) >= 3
    assert [row.status for row in rows] == ["missed"] * (len(rows) - 1) + ["skipped"]
    assert rows[0].exception.startswith("Missed: coalesced into the run scheduled for")
    assert rows[-1].exception == "Skipped: paused for maintenance (DB migration), by alice"


# Run requests, and runs going on, with a real scheduler loop


@pytest.fixture
def runner(registry: dict) -> Iterator[Runner]:
    runner = Runner(threads=4)
    yield runner
    if runner.scheduler is not None and runner.scheduler.running:
        runner.stop(timeout=5)


@pytest.mark.django_db(transaction=True)
def test_run_requests_are_refused_unless_forced_and_a_run_going_on_finishes(runner: Runner) -> None:
    job(interval={"hours": 1}, id="long", args=[1.0])(jobs.sleep)
    job(interval={"hours": 1}, id="hourly")(jobs.succeed)
    runner.start()
    control.run_now("long", requested_by="alice")
    wait_for(lambda: Execution.objects.filter(job_id="long", status="running").exists(), timeout=5)
    # A request made before the pause, taken after it began: recorded skipped, not run. One
    # transaction, so the scheduler cannot take it before the pause (a notification on
    # PostgreSQL has it taken within milliseconds).
    with transaction.atomic():
        RunRequest.objects.create(job_id="hourly", requested_by="carol")
        control.start_maintenance("DB migration", "alice")
    with pytest.raises(control.MaintenanceError, match="paused for maintenance \\(DB migration\\), by alice"):
        control.run_now("hourly", requested_by="bob")
    forced = control.run_now("hourly", requested_by="bob", force=True)

    wait_for(lambda: Execution.objects.filter(job_id="long", status="succeeded").exists(), timeout=5)
    ran = wait_for(lambda: Execution.objects.filter(job_id="hourly", status="succeeded").first(), timeout=5)
    skipped = Execution.objects.get(job_id="hourly", status="skipped")
    assert (skipped.requested_by, skipped.exception) == (
        "carol",
        "Skipped: paused for maintenance (DB migration), by alice",
    )
    assert (ran.requested_by, ran.scheduled_at) == ("bob", forced.requested_at)
    assert not RunRequest.objects.exists()


# The command line


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("scheduling", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_the_command_sets_shows_and_lifts_the_pause(
    declared: None, before_christmas: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    SchedulerInstance.objects.create(hostname="worker", pid=1, role="active")

    text, _ = command("maintenance", "on", "--reason", "DB migration", "--until", "2026-12-24T06:00")
    assert text.strip() == (
        "The scheduler is paused for maintenance (DB migration), by cli:alice, until 2026-12-24 06:00 UTC."
    )
    status, _ = command("status")
    assert "Paused for maintenance: DB migration, by cli:alice, until 2026-12-24 06:00:00 UTC" in status
    data = json.loads(command("maintenance", "status", "--json")[0])["maintenance"]
    assert (data["reason"], data["by"], data["until"]) == (
        "DB migration",
        "cli:alice",
        "2026-12-24T06:00:00+00:00",
    )

    with pytest.raises(CommandError, match=r"paused for maintenance .*Use --force"):
        command("run", "nightly")
    assert not RunRequest.objects.exists()
    command("run", "nightly", "--force")
    assert RunRequest.objects.get().force is True

    text, _ = command("maintenance", "off")
    assert text.strip() == "The scheduler is not paused for maintenance."
    assert "maintenance" not in command("status")[0].lower()
    _, warning = command("maintenance", "off")
    assert warning.strip() == "The scheduler was not paused for maintenance."


@pytest.mark.django_db
def test_the_command_names_what_is_wrong(before_christmas: None) -> None:
    with pytest.raises(CommandError, match="needs --reason"):
        command("maintenance", "on")
    with pytest.raises(CommandError, match="until must be a moment in the future"):
        command("maintenance", "on", "--reason", "x", "--until", "2020-01-01T00:00")


# The HTTP API


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(user, 'test')[1]}"}


@pytest.mark.django_db
def test_the_api_reads_sets_and_lifts_the_pause_with_the_permission(
    client: Client, declared: None, before_christmas: None
) -> None:
    viewer = bearer(user_with("view_job", "run_job", username="viewer"))
    operator = bearer(user_with("view_job", "run_job", "change_maintenance"))
    body = json.dumps({"reason": "DB migration", "until": "2026-12-24T06:00:00Z"})

    assert client.get(f"{API}/maintenance/", headers=viewer).json() == {"maintenance": None}
    refused = client.post(f"{API}/maintenance/", body, content_type="application/json", headers=viewer)
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert "scheduling.change_maintenance" in refused.json()["error"]

    started = client.post(f"{API}/maintenance/", body, content_type="application/json", headers=operator)
    assert started.status_code == 200
    assert started.json()["maintenance"] == {
        "reason": "DB migration",
        "by": "operator",
        "since": started.json()["maintenance"]["since"],
        "until": "2026-12-24T06:00:00+00:00",
        "text": "paused for maintenance (DB migration), by operator, until 2026-12-24 06:00 UTC",
    }
    assert client.get(f"{API}/status/", headers=viewer).json()["maintenance"]["reason"] == "DB migration"
    assert LogEntry.objects.get().change_message.startswith("Paused for maintenance")

    run = client.post(f"{API}/jobs/nightly/run/", headers=viewer)
    assert (run.status_code, run.json()["code"]) == (409, "paused_for_maintenance")
    assert "force" in run.json()["error"]
    forced = client.post(
        f"{API}/jobs/nightly/run/",
        json.dumps({"force": True}),
        content_type="application/json",
        headers=viewer,
    )
    assert forced.status_code == 202
    assert RunRequest.objects.get().force is True

    lifted = client.delete(f"{API}/maintenance/", headers=operator)
    assert (lifted.status_code, lifted.json()) == (200, {"maintenance": None})
    assert client.get(f"{API}/status/", headers=viewer).json()["maintenance"] is None
    assert client.post(f"{API}/jobs/nightly/run/", headers=viewer).status_code == 202


@pytest.mark.django_db
def test_the_api_refuses_bad_input_naming_the_field(
    client: Client, declared: None, before_christmas: None
) -> None:
    operator = bearer(user_with("view_job", "run_job", "change_maintenance"))

    def start(body: object) -> dict:
        response = client.post(
            f"{API}/maintenance/", json.dumps(body), content_type="application/json", headers=operator
        )
        assert response.status_code == 400
        return response.json()

    assert start({})["field"] == "reason"
    assert start({"reason": "x", "until": "2026-01-01T00:00:00Z"})["code"] == "date_in_past"
    assert start({"reason": "x", "who": "me"})["code"] == "unknown_field"
    assert start({"reason": 5})["field"] == "reason"
    bad_force = client.post(
        f"{API}/jobs/nightly/run/",
        json.dumps({"force": "yes"}),
        content_type="application/json",
        headers=operator,
    )
    assert (bad_force.status_code, bad_force.json()["field"]) == (400, "force")
    put = client.put(f"{API}/maintenance/", headers=operator)
    assert (put.status_code, put["Allow"]) == (405, "GET, POST, DELETE")


# The health endpoint


@pytest.mark.django_db
def test_health_stays_200_and_says_only_that_it_is_paused_and_until_when(
    client: Client, before_christmas: None
) -> None:
    SchedulerInstance.objects.create(hostname="worker", pid=1, role="active")
    assert "maintenance" not in client.get("/scheduling/health/").json()

    control.start_maintenance("secret DB migration", "alice", until=UNTIL)
    response = client.get("/scheduling/health/")

    assert response.status_code == 200
    body = response.json()
    assert (body["maintenance"], body["until"]) == (True, "2026-12-24T06:00:00+00:00")
    assert set(body) == {"status", "active_scheduler", "last_beat", "standbys", "maintenance", "until"}
    assert "secret" not in response.text
    assert "alice" not in response.text


@pytest.mark.urls("tests.support.health_check_urls")
@pytest.mark.django_db(transaction=True)  # django-health-check runs checks on its own threads
def test_django_health_check_stays_ok_while_paused(client: Client) -> None:
    SchedulerInstance.objects.create(hostname="worker", pid=2, role="active")
    control.start_maintenance("DB migration", "alice")

    up = client.get("/ht/?format=json")

    assert up.status_code == 200
    assert up.json()["Scheduler()"] == "OK"


# The admin


@pytest.mark.django_db
def test_the_status_panel_sets_shows_and_lifts_the_pause(declared: None, before_christmas: None) -> None:
    client = Client()
    client.force_login(user_with("view_job", "change_maintenance", staff=True))
    assert 'id="maintenance-form"' in client.get("/admin/").text

    response = client.post(
        "/admin/scheduling/job/maintenance/",
        {"reason": "DB migration", "until": "2026-12-24T06:00", "next": "/admin/"},
        follow=True,
    )

    assert response.redirect_chain == [("/admin/", 302)]
    assert "Paused for maintenance: DB migration, by operator, until 2026-12-24 06:00:00 UTC" in " ".join(
        response.text.split()
    )
    assert "Lift the maintenance pause" in response.text
    assert LogEntry.objects.get().object_repr.startswith("paused for maintenance (DB migration)")
    assert "Paused for maintenance: DB migration" in " ".join(
        client.get("/admin/scheduling/job/").text.split()
    )

    lifted = client.post("/admin/scheduling/job/maintenance/", {"off": "1", "next": "/admin/"}, follow=True)
    assert "Paused for maintenance" not in lifted.text
    assert control.maintenance() is None


@pytest.mark.django_db
def test_the_pause_form_needs_the_permission(declared: None) -> None:
    client = Client()
    client.force_login(user_with("view_job", staff=True))

    assert 'id="maintenance-form"' not in client.get("/admin/").text
    assert client.post("/admin/scheduling/job/maintenance/", {"reason": "x"}).status_code == 403
    assert control.maintenance() is None


@pytest.mark.django_db
def test_the_pause_form_says_what_is_wrong(declared: None) -> None:
    client = Client()
    client.force_login(user_with("view_job", "change_maintenance", staff=True))

    response = client.post("/admin/scheduling/job/maintenance/", {"reason": ""}, follow=True)

    assert "Reason must say why the scheduler is paused" in response.text
    assert control.maintenance() is None


@pytest.mark.django_db
def test_run_now_in_the_admin_asks_to_confirm_while_paused_and_forces_when_confirmed(declared: None) -> None:
    client = Client()
    client.force_login(user_with("view_job", "run_job", staff=True))
    control.start_maintenance("DB migration", "alice")
    action = {"action": "run_now", "_selected_action": ["nightly"], "index": "0"}

    asked = client.post("/admin/scheduling/job/", action)
    assert asked.status_code == 200
    assert "The scheduler is paused for maintenance (DB migration), by alice." in asked.text
    assert not RunRequest.objects.exists()

    confirmed = client.post("/admin/scheduling/job/", {**action, "force": "yes"}, follow=True)
    assert "Asked the scheduler to run 1 job now." in confirmed.text
    assert RunRequest.objects.get().force is True

    # The job page's button asks the same.
    button = client.post("/admin/scheduling/job/nightly/run/")
    assert button.status_code == 200
    assert 'id="confirm-run"' in button.text
    client.post("/admin/scheduling/job/nightly/run/", {"force": "yes"})
    assert RunRequest.objects.filter(force=True).count() == 2


@pytest.mark.django_db
def test_a_forced_run_during_maintenance_may_carry_its_own_arguments(
    client: Client, registry: dict, tmp_path: Any
) -> None:
    job(cron="0 3 * * *", id="writer", args=[str(tmp_path / "unused.json")])(jobs.write_arguments)
    sync(JobStore(), registry.values())
    control.start_maintenance("DB migration", "alice")
    headers = bearer(user_with("view_job", "run_job"))
    body = {"args": [str(tmp_path / "given.json"), 3], "force": True}

    refused = client.post(
        f"{API}/jobs/writer/run/", json.dumps({**body, "force": False}), "application/json", headers=headers
    )
    forced = client.post(f"{API}/jobs/writer/run/", json.dumps(body), "application/json", headers=headers)

    assert (refused.status_code, refused.json()["code"]) == (409, "paused_for_maintenance")
    assert forced.status_code == 202
    request = RunRequest.objects.get()
    assert (request.force, request.args, request.kwargs) == (True, [str(tmp_path / "given.json"), 3], None)
    assert LogEntry.objects.get(object_id="writer").change_message == (
        "Requested a run now with its own args, forced during maintenance (API)"
    )
    with pytest.raises(CommandError, match="paused for maintenance"):
        command("run", "writer", "--args", "[]")
    command("run", "writer", "--args", json.dumps([str(tmp_path / "cli.json")]), "--force")
    assert RunRequest.objects.filter(force=True, args=[str(tmp_path / "cli.json")]).exists()


@pytest.mark.django_db
def test_the_pause_reason_must_be_text_a_database_stores(client: Client) -> None:
    headers = bearer(user_with("view_job", "change_maintenance"))

    response = client.post(
        f"{API}/maintenance/", json.dumps({"reason": "a\ud800"}), "application/json", headers=headers
    )

    assert (response.status_code, response.json()["field"], response.json()["code"]) == (
        400,
        "reason",
        "invalid_text",
    )
    assert control.maintenance() is None


@pytest.mark.django_db(transaction=True)  # the worker closes its connections
def test_a_fire_enqueued_before_the_pause_is_skipped_by_the_worker_that_takes_it_during_it(
    registry: dict,
) -> None:
    job(interval=3600, id="queued", runs_in="tasks")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    stored = store.get_all_jobs()
    stored[0].next_run_time = datetime.now(UTC) - timedelta(seconds=1)
    store.update_jobs(stored)
    threads = ThreadTarget(Recorder(), max_workers=1)
    dispatcher = Dispatcher(store, threads.recorder, run_targets(threads))
    now = datetime.now(UTC)
    dispatcher.dispatch(store.get_due_jobs_and_next_run_time(now, 10)[0], now)
    assert Execution.objects.get().status == "enqueued"
    control.start_maintenance("DB migration", "alice")

    work_off()

    execution = Execution.objects.get()
    assert execution.status == "skipped"
    assert execution.exception == "Skipped: paused for maintenance (DB migration), by alice"
    threads.shutdown()


# In another language


@pytest.mark.parametrize(
    ("language", "shown"),
    [
        ("ja", "メンテナンスによる一時停止中 (理由: DB migration、alice による、2026-12-24 06:00 UTC まで)"),
        ("zh-hans", "维护暂停（原因：DB migration，由 alice 设置，至 2026-12-24 06:00 UTC）"),  # noqa: RUF001
    ],
)
def test_the_pause_is_described_in_the_active_language_and_stored_in_english(
    language: str, shown: str
) -> None:
    pause = Maintenance(on=True, reason="DB migration", by="alice", until=UNTIL)
    with translation.override(language):
        assert pause.describe() == shown
        assert pause.skip_message == REASON
        assert str(pause) == REASON.removeprefix("Skipped: ")


@pytest.mark.django_db
def test_the_admin_the_command_and_the_api_say_the_pause_in_the_requested_language(
    declared: None, before_christmas: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    japanese = "メンテナンスによる一時停止中 (理由: DB migration"
    with translation.override("ja"):
        text, _ = command("maintenance", "on", "--reason", "DB migration")
        assert japanese in text, text
        assert "paused for maintenance" not in text
        with pytest.raises(CommandError, match=re.escape(japanese)):
            command("run", "nightly")
    assert Execution.objects.count() == 0

    client = Client()
    client.force_login(user_with("view_job", "change_maintenance", staff=True))
    with translation.override(translation.get_language()):
        page = client.post(
            "/admin/scheduling/job/maintenance/",
            {"reason": "DB work", "next": "/admin/"},
            headers={"accept-language": "ja"},
            follow=True,
        ).text
        answer = client.get(
            f"{API}/maintenance/",
            headers={**bearer(user_with("view_job", username="viewer")), "accept-language": "zh-hans"},
        ).json()
    assert "スケジューラは メンテナンスによる一時停止中 (理由: DB work、operator による) です。" in page
    assert answer["maintenance"]["text"] == "维护暂停（原因：DB work，由 operator 设置）"  # noqa: RUF001
    # What is stored stays English.
    assert LogEntry.objects.latest("action_time").change_message == (
        "Paused for maintenance: paused for maintenance (DB work), by operator"
    )
