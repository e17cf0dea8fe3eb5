from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import override_settings
from django.utils import translation
from django.utils.functional import SimpleLazyObject

from scheduling import checks as scheduling_checks
from scheduling.models import SchedulerInstance
from scheduling.placement import Placement, RunsIn
from scheduling.runtime import startup
from scheduling.runtime.loop import Scheduler
from tests.conftest import ROOT

MEMORY = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFERRED = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3", "OPTIONS": {}}}
SERVER = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "test"}}


def ids(messages: list[checks.CheckMessage]) -> list[str | None]:
    return [message.id for message in messages]


def test_check_ids_are_unique_and_namespaced() -> None:
    # E003 is also what a scheduler starting beside one on another machine refuses with.
    source = inspect.getsource(scheduling_checks) + inspect.getsource(startup)
    found = [line.split('"')[1] for line in source.splitlines() if 'id="scheduling.' in line]
    assert len(found) == len(set(found)) == 12


def test_embedded_mode_is_refused_on_an_in_memory_database() -> None:
    assert ids(scheduling_checks.embedded_database_messages(MEMORY, embedded=True)) == ["scheduling.E001"]
    assert scheduling_checks.embedded_database_messages(MEMORY, embedded=False) == []
    assert scheduling_checks.embedded_database_messages(SERVER, embedded=True) == []


def test_time_zone_support_is_required() -> None:
    assert ids(scheduling_checks.time_zone_messages(use_tz=False)) == ["scheduling.E004"]
    assert scheduling_checks.time_zone_messages(use_tz=True) == []


@pytest.mark.django_db
def test_the_checks_refuse_a_site_without_time_zone_support(settings: Any) -> None:
    # runscheduler runs the system checks before it starts, as every management command does.
    settings.USE_TZ = False
    with pytest.raises(SystemCheckError, match=r"scheduling\.E004.*clocks go back"):
        call_command("check")


def test_sqlite_without_immediate_transactions_is_warned_about() -> None:
    assert ids(scheduling_checks.sqlite_locking_messages(DEFERRED)) == ["scheduling.W002"]
    assert scheduling_checks.sqlite_locking_messages(SERVER) == []


@pytest.mark.django_db  # Django 6.1's model checks read the database
def test_the_demo_settings_pass_every_check() -> None:
    call_command("check", "--fail-level", "WARNING")


def test_scheduling_listed_before_django_apscheduler_is_warned_about() -> None:
    assert ids(scheduling_checks.installed_apps_messages(["scheduling", "django_apscheduler"])) == [
        "scheduling.W003"
    ]
    assert (
        scheduling_checks.installed_apps_messages(["django_apscheduler", "scheduling.apps.SchedulingConfig"])
        == []
    )


def test_embedded_mode_on_sqlite_is_warned_about() -> None:
    assert ids(scheduling_checks.embedded_on_sqlite_messages(DEFERRED, embedded=True)) == ["scheduling.W004"]
    assert scheduling_checks.embedded_on_sqlite_messages(DEFERRED, embedded=False) == []
    assert scheduling_checks.embedded_on_sqlite_messages(SERVER, embedded=True) == []


@pytest.mark.django_db
def test_schedulers_on_several_machines_sharing_sqlite_are_an_error() -> None:
    SchedulerInstance.objects.create(hostname="web-1", pid=1)
    SchedulerInstance.objects.create(hostname="web-2", pid=1)

    messages = scheduling_checks.check_schedulers_on_sqlite_hosts(databases=["default"])

    if connection.vendor == "sqlite":
        assert ids(messages) == ["scheduling.E003"]
        assert "web-1, web-2" in messages[0].msg
    else:
        assert messages == []
    assert scheduling_checks.check_schedulers_on_sqlite_hosts(databases=None) == []
    assert scheduling_checks.sqlite_hosts_messages({"web-1"}) == []


def test_only_schedulers_other_than_ours_count_as_started_at_startup() -> None:
    theirs = BackgroundScheduler(jobstores={"default": MemoryJobStore()})
    ours = Scheduler(poll_interval=0.5, jobstores={"default": MemoryJobStore()})
    # A lazy object must not be evaluated by the scan (a stale test response's resolver_match was).
    trap = SimpleLazyObject(lambda: pytest.fail("the scan evaluated a lazy object"))
    theirs.start()
    ours.start()
    try:
        assert scheduling_checks.running_foreign_schedulers() == [theirs]
        assert trap is not None
        assert ids(scheduling_checks.started_scheduler_messages([theirs])) == ["scheduling.E002"]
    finally:
        theirs.shutdown(wait=False)
        ours.shutdown(wait=False)
    assert scheduling_checks.running_foreign_schedulers() == []


def manage_check(mistake: str, database: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_misconfigured",
        "SCHEDULING_TEST_MISTAKE": mistake,
        "DATABASE_URL": f"sqlite:///{database}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("mistake", "exit_code", "said"),
    [
        ("scheduler-in-ready", 1, "scheduling.E002"),
        ("apps-out-of-order", 0, "scheduling.W003"),
        ("no-django-apscheduler", 1, "The 'scheduling' app needs 'django_apscheduler' in INSTALLED_APPS"),
        ("no-scheduling", 1, "'scheduling' is not in INSTALLED_APPS, but its models are imported"),
    ],
)
def test_manage_py_check_names_each_mistake_in_a_real_project(
    mistake: str, exit_code: int, said: str, tmp_path: Path
) -> None:
    result = manage_check(mistake, tmp_path / "db.sqlite3")

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert said in result.stdout + result.stderr


RQ = {"placed": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["long", "short", "unset"]}}
ON_RQ = [Placement(RunsIn.TASKS, "placed", queue) for queue in ("long", "short", "unset")]
# What tests.support.celery_app.app.conf holds, for the Celery backend's OPTIONS without Celery.
CELERY_APP = SimpleNamespace(conf=SimpleNamespace(task_soft_time_limit=None, task_time_limit=600))


@override_settings(
    RQ_QUEUES={"long": {"DEFAULT_TIMEOUT": -1}, "short": {"DEFAULT_TIMEOUT": 600}, "unset": {}}
)
def test_a_task_backend_that_stops_tasks_before_the_task_timeout_is_named_with_its_queue() -> None:
    messages = scheduling_checks.task_backend_limit_messages(ON_RQ, RQ, task_timeout=3600)

    assert ids(messages) == ["scheduling.W007", "scheduling.W007"]
    assert "queue 'short' after 600 s, before SCHEDULING_TASK_TIMEOUT (3600 s)" in messages[0].msg
    assert "queue 'unset' after 180 s" in messages[1].msg  # RQ's default, which django-tasks-rq keeps
    assert not scheduling_checks.task_backend_limit_messages(ON_RQ, RQ, task_timeout=180)
    # Jobs in threads, on another backend or on a backend that does not stop tasks: nothing to say.
    elsewhere = [Placement(), Placement(RunsIn.TASKS, "default", "default")]
    assert not scheduling_checks.task_backend_limit_messages(elsewhere, RQ, task_timeout=3600)


def test_celery_time_limits_below_the_task_timeout_are_warned_about() -> None:
    celery = {
        "placed": {
            "BACKEND": "django_tasks_celery.CeleryBackend",
            "OPTIONS": {"CELERY_APP": "tests.test_checks.CELERY_APP"},
        }
    }
    on_celery = [Placement(RunsIn.TASKS, "placed", "default")]

    [message] = scheduling_checks.task_backend_limit_messages(on_celery, celery, task_timeout=3600)

    assert message.id == "scheduling.W007"
    assert "after 600 s" in message.msg
    assert "CELERY_TASK_TIME_LIMIT" in str(message.hint)
    assert not scheduling_checks.task_backend_limit_messages(on_celery, celery, task_timeout=600)


def test_the_task_backend_limit_hint_is_in_the_active_language_like_the_other_hints() -> None:
    on_rq = [Placement(RunsIn.TASKS, "placed", "unset")]
    with translation.override("ja"):
        [message] = scheduling_checks.task_backend_limit_messages(on_rq, RQ, task_timeout=3600)
    assert str(message.hint).startswith("バックエンドの制限を SCHEDULING_TASK_TIMEOUT 以上にする")
    with translation.override("zh-hans"):
        [message] = scheduling_checks.task_backend_limit_messages(on_rq, RQ, task_timeout=3600)
    assert "CELERY_TASK_SOFT_TIME_LIMIT" in str(message.hint)
    assert str(message.hint).startswith("请将该后端的时限设为不小于 SCHEDULING_TASK_TIMEOUT")
