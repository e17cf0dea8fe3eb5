"""Admin flows in a real headless Chromium, against a live server and a real runscheduler process."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from scheduling import declarations, job
from scheduling.models import Execution
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.sinks import webhook_receiver

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def log_in(page, live_server, admin_user) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/scheduling/job/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/scheduling/job/")


def reload_until(page, text: str, timeout: float = 10.0) -> None:
    def shown() -> bool:
        page.reload()
        return text in page.content()

    wait_for(shown, timeout=timeout, interval=0.3)


def test_operating_jobs_from_the_admin(
    page, live_server, admin_user, scheduler_process, figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler_process("config.jobs,tests.support.browser_jobs")
    log_in(page, live_server, admin_user)

    # The list: the demo jobs and ours with schedules in words, the scheduler alive.
    content = page.content()
    assert "Scheduler running" in content
    for words in (
        "Demo: heartbeat",
        "Every 5 seconds",
        "Every 10 seconds",
        "At 03:00, every day",
        "Every hour",
    ):
        assert words in content
    page.screenshot(path=ARTIFACTS / "01-jobs-list.png", full_page=True)

    # Run now: the request returns at once and the scheduler runs it.
    page.click("text=Hourly sync")
    page.click("button[name=run]")
    page.wait_for_selector("text=Asked the scheduler to run 1 job now.")
    reload_until(page, "Manual request (admin)")
    assert Execution.objects.get(job_id="browser.hourly").status == Execution.Status.SUCCEEDED
    page.screenshot(path=ARTIFACTS / "02-run-now.png", full_page=True)

    # Pause, then resume.
    page.click("button[name=pause]")
    page.wait_for_selector("button[name=resume]")
    assert JobStore().lookup_job("browser.hourly").next_run_time is None
    page.click("button[name=resume]")
    page.wait_for_selector("button[name=pause]")
    assert JobStore().lookup_job("browser.hourly").next_run_time is not None

    # A malformed cron is refused next to the field and nothing is saved.
    before = str(JobStore().lookup_job("browser.hourly").trigger)
    page.check("input[name=kind][value=cron]")
    page.fill("input[name=cron]", "61 * * * *")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "invalid cron expression" in page.inner_text(".errorlist")
    assert str(JobStore().lookup_job("browser.hourly").trigger) == before
    page.screenshot(path=ARTIFACTS / "03-invalid-cron.png", full_page=True)

    # A valid schedule is saved, and the running scheduler follows it within a second.
    page.check("input[name=kind][value=interval]")
    page.fill("input[name=every]", "2")
    page.select_option("select[name=unit]", "seconds")
    saved = timezone.now()
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    scheduled = wait_for(
        # Started: with fire-ahead its row is written a moment before its time, without a start.
        lambda: Execution.objects.filter(
            job_id="browser.hourly", origin=Execution.Origin.SCHEDULE, started_at__isnull=False
        ).first(),
        timeout=10,
    )
    page.screenshot(path=ARTIFACTS / "04-rescheduled.png", full_page=True)
    lateness = (scheduled.started_at - scheduled.scheduled_at).total_seconds()
    figures(f"browser: rescheduled from the admin, first scheduled run started {lateness:.3f} s late")
    assert scheduled.scheduled_at - saved <= timedelta(seconds=3)
    assert lateness < 1.0

    # A new job, from a function the code declares schedulable, run by the scheduler.
    monkeypatch.setattr(declarations, "schedulables", {"tests.support.jobs:succeed": "Say hello"})
    page.goto(f"{live_server.url}/admin/scheduling/job/add/")
    page.select_option("select[name=function]", "tests.support.jobs:succeed")
    page.fill("input[name=job_id]", "browser.added")
    page.fill("input[name=job_name]", "Added in the browser")
    page.check("input[name=kind][value=interval]")
    page.fill("input[name=every]", "1")
    page.select_option("select[name=unit]", "seconds")
    page.screenshot(path=ARTIFACTS / "05-add-job.png", full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    wait_for(
        lambda: Execution.objects.filter(job_id="browser.added", status="succeeded").exists(), timeout=10
    )
    page.goto(f"{live_server.url}/admin/scheduling/job/")
    assert "Added in the browser" in page.content()
    page.screenshot(path=ARTIFACTS / "06-jobs-after.png", full_page=True)


def test_running_a_job_now_with_arguments_from_the_admin(
    page, live_server, admin_user, scheduler_process, tmp_path: Path
) -> None:
    scheduler_process("tests.support.browser_jobs")
    log_in(page, live_server, admin_user)
    given = tmp_path / "given.json"

    page.click("text=Argument writer")
    page.click("text=Run now with arguments…")
    assert page.input_value("textarea[name=args]") == '["unused.json"]'

    # A keyword the function does not take is refused next to its field; nothing is requested.
    page.fill("textarea[name=kwargs]", '{"colour": "red"}')
    page.click("input[name=run]")
    page.wait_for_selector(".field-kwargs .errorlist")
    assert "unexpected keyword argument 'colour'" in page.inner_text(".field-kwargs .errorlist")
    page.screenshot(path=ARTIFACTS / "07-run-with-bad-arguments.png", full_page=True)

    page.fill("textarea[name=args]", json.dumps([str(given), 3]))
    page.fill("textarea[name=kwargs]", '{"label": "from the browser"}')
    page.click("input[name=run]")
    page.wait_for_selector("text=Asked the scheduler to run browser.writer now.")
    run = wait_for(
        lambda: Execution.objects.filter(job_id="browser.writer", status="succeeded").first(), timeout=15
    )
    assert json.loads(given.read_text()) == {"path": str(given), "count": 3, "label": "from the browser"}
    assert JobStore().lookup_job("browser.writer").args == ("unused.json",)

    # The run's page shows the arguments it used and who asked.
    page.goto(f"{live_server.url}/admin/scheduling/execution/{run.pk}/change/")
    assert f"manual, by {admin_user.username}" in page.content()
    assert '"label": "from the browser"' in page.inner_text(".scheduling-kwargs")
    assert str(given) in page.inner_text(".scheduling-args")
    page.screenshot(path=ARTIFACTS / "08-run-with-arguments.png", full_page=True)


def test_a_maintenance_window_set_in_the_admin(page, live_server, admin_user, scheduler_process) -> None:
    scheduler_process("config.jobs,tests.support.browser_jobs")
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/admin/")

    # Set the window on the index's status panel: reason, and an end in local time.
    until = timezone.localtime() + timedelta(days=1)
    page.fill("#maintenance-form input[name=reason]", "DB migration")
    page.fill("#maintenance-form input[name=until]", until.strftime("%Y-%m-%dT%H:%M"))
    page.click("#maintenance-form button[name=on]")
    page.wait_for_selector("#maintenance-state")
    panel = " ".join(page.inner_text("#scheduler-status").split())
    assert f"Paused for maintenance: DB migration, by {admin_user.username}, until" in panel
    assert until.strftime("%Y-%m-%d %H:%M") in panel
    page.screenshot(path=ARTIFACTS / "10-maintenance-on.png", full_page=True)

    # The scheduler records the fires meanwhile as skipped, with the reason.
    skipped = wait_for(lambda: Execution.objects.filter(status="skipped").first(), timeout=15)
    assert skipped.exception.startswith("Skipped: paused for maintenance (DB migration), by admin, until")

    # Run now asks to confirm; confirmed, it runs.
    page.goto(f"{live_server.url}/admin/scheduling/job/")
    page.click("text=Hourly sync")
    page.click("button[name=run]")
    page.wait_for_selector("#confirm-run")
    assert "The scheduler is paused for maintenance (DB migration)" in page.content()
    page.click("#confirm-run")
    page.wait_for_selector("text=Asked the scheduler to run 1 job now.")
    wait_for(
        lambda: Execution.objects.filter(job_id="browser.hourly", status="succeeded").exists(), timeout=10
    )

    # Lifted from the jobs list's panel.
    page.goto(f"{live_server.url}/admin/scheduling/job/")
    page.click("#maintenance-form button[name=off]")
    page.wait_for_selector("text=The maintenance pause is lifted")
    assert "Paused for maintenance" not in page.inner_text("#scheduler-status")
    assert page.is_visible("#maintenance-form input[name=reason]")
    page.screenshot(path=ARTIFACTS / "11-maintenance-off.png", full_page=True)


def test_an_alert_set_in_the_admin_reaches_its_webhook_and_the_job_page_lists_the_attempt(
    page, live_server, admin_user, scheduler_process
) -> None:
    scheduler_process("config.jobs,tests.support.browser_jobs")
    log_in(page, live_server, admin_user)
    with webhook_receiver() as hook:
        page.click("text=Failing import")
        page.select_option("select[name=alerts]", "own")
        page.fill("textarea[name=alert_to]", hook.url)
        page.check("input[name=alert_on][value=failure]")
        page.click("input[name=_continue]")
        page.wait_for_selector("text=was changed successfully")

        page.click("button[name=run]")
        page.wait_for_selector("text=Asked the scheduler to run 1 job now.")
        [post] = wait_for(lambda: hook.posts, timeout=30)
    assert json.loads(post.body)["job"] == "browser.failing"

    # The job's page: the alert, its delivery sent, and the one attempt at it, in local time.
    page.goto(f"{live_server.url}/admin/scheduling/job/browser.failing/change/")
    reload_until(page, "scheduling-attempts")
    alerts = page.inner_text(".field-recent_alerts")
    assert "Job browser.failing failed" in alerts
    assert f"{hook.url}/…: Sent" in alerts  # by host only: a webhook's path may hold its secret
    assert ": sent" in page.inner_text(".scheduling-attempts")
    page.screenshot(path=ARTIFACTS / "17-alert-delivered.png", full_page=True)


def test_cancelling_a_running_run_from_the_admin(page, live_server, admin_user, scheduler_process) -> None:
    scheduler_process("config.jobs,tests.support.browser_jobs")
    log_in(page, live_server, admin_user)
    page.click("text=Long export")
    page.click("button[name=run]")
    page.wait_for_selector("text=Asked the scheduler to run 1 job now.")
    run = wait_for(
        lambda: Execution.objects.filter(job_id="browser.long", status="running").first(), timeout=30
    )

    # The job's page lists the run with a Cancel button beside it.
    reload_until(page, "Running")
    page.click("#recent-runs button[name=cancel]")
    page.wait_for_selector(f"text=Asked to cancel run {run.pk} of browser.long")
    cancelled = wait_for(lambda: Execution.objects.filter(pk=run.pk, status="cancelled").first(), timeout=30)
    assert cancelled.exception == f"Cancelled by {admin_user.username}: its process was stopped"
    assert cancelled.duration is not None
    assert cancelled.duration < 60

    # The run's own page says who cancelled it, and offers no Cancel button any more.
    page.goto(f"{live_server.url}/admin/scheduling/execution/{run.pk}/change/")
    assert "Cancelled" in page.inner_text("#content")
    assert f"by {admin_user.username} at" in page.inner_text("#content")
    assert not page.is_visible("button[name=cancel]")
    page.screenshot(path=ARTIFACTS / "14-run-cancelled.png", full_page=True)


def test_a_holiday_added_in_the_admin_is_skipped_by_the_preview_and_the_scheduler(
    page, live_server, admin_user, scheduler_process
) -> None:
    scheduler_process("config.jobs,tests.support.browser_jobs")
    log_in(page, live_server, admin_user)
    tomorrow = timezone.localdate() + timedelta(days=1)

    # A calendar with a holiday tomorrow, made in the admin.
    page.goto(f"{live_server.url}/admin/scheduling/calendar/add/")
    page.fill("input[name=name]", "Holidays")
    page.fill("input[name=periods-0-day]", tomorrow.isoformat())
    page.fill("input[name=periods-0-label]", "Bank holiday")
    page.screenshot(path=ARTIFACTS / "12-calendar-add.png", full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    assert "1 day" in page.inner_text("#result_list")

    # Assigned to the nightly job: its next-runs preview leaves tomorrow's run out and says why.
    page.goto(f"{live_server.url}/admin/scheduling/job/browser.nightly/change/")
    page.check("input[name=calendars][value=Holidays]")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was changed successfully")
    preview = page.inner_text(".field-preview")
    assert f'skips {tomorrow:%Y-%m-%d} 03:00: calendar "Holidays" (Bank holiday)' in preview
    assert f"{tomorrow:%Y-%m-%d} 03:00:00" not in preview.replace(f"skips {tomorrow:%Y-%m-%d} 03:00", "")
    page.screenshot(path=ARTIFACTS / "13-calendar-preview.png", full_page=True)

    # A blackout window around now, on the heartbeat job: the scheduler records its fires skipped.
    page.goto(f"{live_server.url}/admin/scheduling/calendar/")
    page.click("text=Holidays")
    start, end = timezone.localtime() - timedelta(hours=1), timezone.localtime() + timedelta(hours=1)
    page.fill("input[name=periods-1-start_0]", start.strftime("%Y-%m-%d"))
    page.fill("input[name=periods-1-start_1]", start.strftime("%H:%M:%S"))
    page.fill("input[name=periods-1-end_0]", end.strftime("%Y-%m-%d"))
    page.fill("input[name=periods-1-end_1]", end.strftime("%H:%M:%S"))
    page.fill("input[name=periods-1-label]", "Blackout")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    page.goto(f"{live_server.url}/admin/scheduling/job/demo.heartbeat/change/")
    page.check("input[name=calendars][value=Holidays]")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    skipped = wait_for(
        lambda: Execution.objects.filter(job_id="demo.heartbeat", status="skipped").first(), timeout=20
    )
    assert skipped.exception == 'Skipped: calendar "Holidays" (Blackout)'


def test_the_timeline_shows_each_run_and_opens_it(page, live_server, admin_user, registry: dict) -> None:
    job(interval={"hours": 1}, id="browser.report", name="Nightly report")(jobs.succeed)
    sync(JobStore(), registry.values())
    now = timezone.now()
    outcomes = {
        "succeeded": (timedelta(hours=1), ""),
        "failed": (timedelta(hours=3), "ValueError: the report's source is empty"),
        "timed_out": (timedelta(hours=6), "Timed out after 60 s"),
        "missed": (timedelta(hours=9), "Missed by 120 s"),
        "skipped": (timedelta(hours=12), "Skipped: overlapping run"),
    }
    runs = {
        status: Execution.objects.create(
            job_id="browser.report", status=status, scheduled_at=now - ago, duration=1.5, exception=message
        )
        for status, (ago, message) in outcomes.items()
    }
    older = Execution.objects.create(
        job_id="browser.report",
        status="failed",
        scheduled_at=now - timedelta(days=3),
        exception="Old failure",
    )
    log_in(page, live_server, admin_user)

    # From the jobs list to the timeline: a row for the job, a mark for each run, the legend.
    page.click("#timeline-link")
    page.wait_for_selector("svg.scheduling-timeline")
    assert page.locator('g.t-row[data-job="browser.report"]').count() == 1
    for status in outcomes:
        assert page.locator(f"rect.t-{status}").count() == 1
    assert "5 runs in the window" in page.inner_text("#timeline-summary")
    assert "Timed out" in page.inner_text("#timeline-legend")

    # Hover: the mark is outlined and its title has the details.
    failed = page.locator("rect.t-failed")
    stroke = "rect => getComputedStyle(rect).stroke"
    assert page.eval_on_selector("rect.t-failed", stroke) == "none"
    failed.hover()
    assert page.eval_on_selector("rect.t-failed", stroke) != "none"
    title = failed.locator("title").text_content() or ""
    assert title.startswith("Nightly report · ")
    assert "Failed · 1.500 s · ValueError: the report's source is empty" in title
    page.screenshot(path=ARTIFACTS / "15-timeline.png", full_page=True)

    # Seven days: the older run is there too.
    page.select_option("select[name=window]", "7d")
    page.click("#timeline-form button[type=submit]")
    page.wait_for_url("**window=7d**")
    assert page.locator("rect.t-failed").count() == 2
    assert "Old failure" in page.inner_html(f'a[href="/admin/scheduling/execution/{older.pk}/change/"]')

    # Click through to the run.
    page.click(f'a[href="/admin/scheduling/execution/{runs["failed"].pk}/change/"] rect')
    page.wait_for_url(f"**/admin/scheduling/execution/{runs['failed'].pk}/change/")
    assert "ValueError: the report's source is empty" in page.inner_text("#content")
    page.screenshot(path=ARTIFACTS / "16-timeline-run.png", full_page=True)


@pytest.mark.parametrize(
    ("accept_language", "code", "words"),
    [
        (
            "ja,en;q=0.5",
            "ja",
            {
                "list": [
                    "スケジュール",
                    "次回実行",
                    "スケジューラが動いていません。",
                    "2 時間ごと",
                    "実行のタイムライン",
                ],
                "job": ["最近の実行", "今すぐ実行", "予定日時", "成功", "失敗"],
                "runs": ["実行記録", "成功", "失敗", "タイムアウト"],
            },
        ),
        (
            "zh-CN,zh;q=0.9",
            "zh-hans",
            {
                "list": ["计划", "下次运行", "没有正在运行的调度器。", "每 2 小时", "运行时间线"],
                "job": ["最近的运行", "立即运行", "计划时间", "成功", "失败"],
                "runs": ["执行记录", "成功", "失败", "超时"],
            },
        ),
    ],
)
def test_the_admin_in_japanese_and_chinese(
    page, live_server, admin_user, registry: dict, accept_language: str, code: str, words: dict
) -> None:
    job(interval={"hours": 2}, id="browser.report", name="Nightly report")(jobs.succeed)
    sync(JobStore(), registry.values())
    now = timezone.now()
    for ago, status in ((1, "succeeded"), (3, "failed"), (5, "timed_out"), (7, "succeeded")):
        Execution.objects.create(
            job_id="browser.report", status=status, scheduled_at=now - timedelta(hours=ago), duration=1.5
        )
    # The browser's language, as LocaleMiddleware reads it from each request.
    page.set_extra_http_headers({"Accept-Language": accept_language})
    log_in(page, live_server, admin_user)

    assert page.get_attribute("html", "lang") == code
    shown = page.inner_text("#content")
    assert [word for word in words["list"] if word not in shown] == []
    page.screenshot(path=ARTIFACTS / f"i18n-{code}-1-jobs-list.png", full_page=True)

    page.click("text=Nightly report")
    page.wait_for_url("**/admin/scheduling/job/browser.report/change/")
    shown = page.inner_text("#content")
    assert [word for word in words["job"] if word not in shown] == []
    page.screenshot(path=ARTIFACTS / f"i18n-{code}-2-job.png", full_page=True)

    page.goto(f"{live_server.url}/admin/scheduling/execution/")
    shown = page.inner_text("#content")
    assert [word for word in words["runs"] if word not in shown] == []
    page.screenshot(path=ARTIFACTS / f"i18n-{code}-3-executions.png", full_page=True)
