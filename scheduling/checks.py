"""System checks for configurations that make scheduling unsafe or fragile.

Each has an id (``scheduling.E…`` errors stop ``runscheduler`` and ``runserver``, ``W…``
warnings are printed) and a hint saying what to do.
"""

from __future__ import annotations

import gc
import importlib.util
import threading
from collections.abc import Iterable
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.utils.translation import gettext as _

from scheduling import metrics_access
from scheduling.conf import settings
from scheduling.runtime.startup import sqlite_hosts_messages


def register() -> None:
    checks.register(check_installed_apps)
    checks.register(check_embedded_database, checks.Tags.database)
    checks.register(check_time_zone_support)
    checks.register(check_sqlite_locking, checks.Tags.database)
    checks.register(check_embedded_on_sqlite)
    checks.register(check_schedulers_on_sqlite_hosts, checks.Tags.database)
    checks.register(check_no_scheduler_started_at_startup)
    checks.register(check_thread_timeouts)
    checks.register(check_task_backend_limits)
    checks.register(check_alerts_setting)
    checks.register(check_metrics)


def check_installed_apps(**kwargs: Any) -> list[checks.CheckMessage]:
    return installed_apps_messages(list(django_settings.INSTALLED_APPS))


def check_embedded_on_sqlite(**kwargs: Any) -> list[checks.CheckMessage]:
    return embedded_on_sqlite_messages(django_settings.DATABASES, settings.EMBEDDED)


def check_schedulers_on_sqlite_hosts(
    databases: Iterable[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from django.db import DatabaseError, connections

    from scheduling.models import SchedulerInstance

    if not databases or "default" not in databases or connections["default"].vendor != "sqlite":
        return []

    try:
        hosts = set(SchedulerInstance.objects.alive().values_list("hostname", flat=True))
    # Before the first migrate (which runs the database checks too) the table does not exist.
    except DatabaseError:
        return []
    return sqlite_hosts_messages(hosts)


def check_no_scheduler_started_at_startup(**kwargs: Any) -> list[checks.CheckMessage]:
    return started_scheduler_messages(running_foreign_schedulers())


def check_thread_timeouts(**kwargs: Any) -> list[checks.CheckMessage]:
    from scheduling import declarations

    return thread_timeout_messages(declarations.registry.values())


def thread_timeout_messages(declared: Iterable[Any]) -> list[checks.CheckMessage]:
    """A timeout on a job run in threads is a deadline that only flags the run: say so."""
    from scheduling.placement import Placement, RunsIn

    return [
        checks.Warning(
            f"Job {declaration.id!r} declares timeout={declaration.policy['timeout']} but runs in the "
            "scheduler's threads, where a run cannot be stopped: past its timeout it is only marked "
            "overrunning (and current_run().deadline_passed turns true).",
            hint=_(
                "Use runs_in='processes' (or 'tasks') for a hard limit, or check "
                "scheduling.current_run().deadline_passed in the job and return early."
            ),
            obj=declaration.func_ref,
            id="scheduling.W005",
        )
        for declaration in declared
        if declaration.policy.get("timeout") is not None
        and Placement.of(declaration.executor).runs_in == RunsIn.THREADS
    ]


def check_task_backend_limits(**kwargs: Any) -> list[checks.CheckMessage]:
    from scheduling import declarations
    from scheduling.placement import Placement

    placements = {Placement.of(declaration.executor) for declaration in declarations.registry.values()}
    return task_backend_limit_messages(
        placements, getattr(django_settings, "TASKS", {}), settings.TASK_TIMEOUT
    )


def task_backend_limit_messages(
    placements: Iterable[Any], backends: dict[str, dict[str, Any]], task_timeout: float
) -> list[checks.CheckMessage]:
    """A tasks backend that stops a task before SCHEDULING_TASK_TIMEOUT cuts runs that the
    scheduler still allows (and that the README says to allow for): say where."""
    from scheduling.placement import RunsIn
    from scheduling.runs import backend_limits

    messages: list[checks.CheckMessage] = []
    for placement in sorted(
        {placement for placement in placements if placement.runs_in == RunsIn.TASKS},
        key=lambda placement: (placement.backend, placement.queue),
    ):
        limit = backend_limits.time_limit(backends.get(placement.backend) or {}, placement.queue)
        if limit is None or limit >= task_timeout:
            continue
        messages.append(
            checks.Warning(
                f"Task backend {placement.backend!r} stops a task on queue {placement.queue!r} after "
                f"{limit:g} s, before SCHEDULING_TASK_TIMEOUT ({task_timeout:g} s): a run of a job "
                "placed there that takes longer is cut by the backend whatever the job's own timeout "
                "(recorded failed, or interrupted once SCHEDULING_TASK_TIMEOUT has passed).",
                hint=_(
                    "Give the backend a limit of SCHEDULING_TASK_TIMEOUT or more (RQ: the queue's "
                    "DEFAULT_TIMEOUT in RQ_QUEUES, -1 for none; Celery: CELERY_TASK_TIME_LIMIT and "
                    "CELERY_TASK_SOFT_TIME_LIMIT), or set SCHEDULING_TASK_TIMEOUT to the longest run there."
                ),
                id="scheduling.W007",
            )
        )
    return messages


def check_alerts_setting(**kwargs: Any) -> list[checks.CheckMessage]:
    return alerts_setting_messages(settings.ALERTS)


def alerts_setting_messages(value: Any) -> list[checks.CheckMessage]:
    """SCHEDULING_ALERTS goes through the validator of @job's ``alert``: say what is wrong now,
    not when the first failure cannot be alerted."""
    from scheduling import validation

    try:
        validation.check_alert(value)
    except validation.InputError as exc:
        return [
            checks.Error(
                f"SCHEDULING_ALERTS is invalid: {exc}",
                hint=_('For example {"to": ["mail_admins"], "on": ["failure", "missed"]}.'),
                id="scheduling.E006",
            )
        ]
    return []


def check_embedded_database(**kwargs: Any) -> list[checks.CheckMessage]:
    return embedded_database_messages(django_settings.DATABASES, settings.EMBEDDED)


def check_time_zone_support(**kwargs: Any) -> list[checks.CheckMessage]:
    return time_zone_messages(django_settings.USE_TZ)


def check_sqlite_locking(**kwargs: Any) -> list[checks.CheckMessage]:
    return sqlite_locking_messages(django_settings.DATABASES)


def _sqlite(databases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {alias: db for alias, db in databases.items() if str(db.get("ENGINE", "")).endswith("sqlite3")}


def embedded_database_messages(
    databases: dict[str, dict[str, Any]], embedded: bool
) -> list[checks.CheckMessage]:
    default = _sqlite(databases).get("default")
    name = str(default.get("NAME", "")) if default else ""
    if embedded and default and (name == ":memory:" or "mode=memory" in name):
        return [
            checks.Error(
                "SCHEDULING_EMBEDDED is on with an in-memory SQLite database: every process would have its "
                "own database and its own lease, so every web process would run every job.",
                hint=_("Use a file or server database, or run 'manage.py runscheduler' instead."),
                id="scheduling.E001",
            )
        ]
    return []


def time_zone_messages(use_tz: bool) -> list[checks.CheckMessage]:
    if use_tz:
        return []
    return [
        # Refused rather than handled: with naive datetimes the two 02:30s of the night clocks go
        # back are one value, so the history's unique (job, scheduled time) drops one of two
        # interval runs, and nothing can tell a run of the first hour from one of the second.
        checks.Error(
            "USE_TZ is off: run times would be stored as local times without an offset. When clocks "
            "go back, an hour of them happens twice and is indistinguishable; runs in it collide on "
            "(job, scheduled time) and one is silently lost, and every run time shifts if the "
            "server's time zone changes.",
            hint=_("Set USE_TZ = True (Django's default); scheduling stores and compares instants in UTC."),
            id="scheduling.E004",
        )
    ]


def sqlite_locking_messages(databases: dict[str, dict[str, Any]]) -> list[checks.CheckMessage]:
    return [
        checks.Warning(
            f"The SQLite database '{alias}' uses deferred transactions: the scheduler and the web server "
            "writing at once fail with 'database is locked'.",
            hint=_(
                "Set DATABASES[...]['OPTIONS'] = {'transaction_mode': 'IMMEDIATE', 'timeout': 20} "
                "(and PRAGMA journal_mode=WAL in 'init_command')."
            ),
            id="scheduling.W002",
        )
        for alias, database in _sqlite(databases).items()
        if str(database.get("OPTIONS", {}).get("transaction_mode", "")).upper() != "IMMEDIATE"
    ]


def _app_position(installed_apps: list[str], name: str) -> int | None:
    for position, entry in enumerate(installed_apps):
        if entry == name or entry.startswith(f"{name}.apps."):
            return position
    return None


def installed_apps_messages(installed_apps: list[str]) -> list[checks.CheckMessage]:
    # A missing django_apscheduler never gets here: scheduling.models stops the start-up first.
    ours = _app_position(installed_apps, "scheduling")
    theirs = _app_position(installed_apps, "django_apscheduler")
    if ours is None or theirs is None or ours > theirs:
        return []
    return [
        checks.Warning(
            "'scheduling' comes before 'django_apscheduler' in INSTALLED_APPS, so django-apscheduler's "
            "own admin is registered beside ours; its 'run' action runs jobs inside the web request.",
            hint=_("Put 'scheduling' after 'django_apscheduler' in INSTALLED_APPS."),
            id="scheduling.W003",
        )
    ]


def embedded_on_sqlite_messages(
    databases: dict[str, dict[str, Any]], embedded: bool
) -> list[checks.CheckMessage]:
    if not embedded or "default" not in _sqlite(databases):
        return []
    return [
        checks.Warning(
            "SCHEDULING_EMBEDDED is on with SQLite: every web worker process runs a scheduler, and all of "
            "them and your requests share SQLite's single write lock.",
            hint=_(
                "Fine for one small site on one machine. With several workers or machines, use PostgreSQL "
                "or MariaDB, or run one 'manage.py runscheduler' instead of embedded mode."
            ),
            id="scheduling.W004",
        )
    ]


def running_foreign_schedulers() -> list[Any]:
    """APScheduler schedulers running in this process that are not ours."""
    from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler

    from scheduling.runtime.loop import Scheduler

    # BackgroundScheduler (the blog posts' choice) runs a thread named so; scanning every object
    # costs tens of milliseconds, so it is done only when such a thread exists.
    if not any(thread.name == "APScheduler" for thread in threading.enumerate()):
        return []
    # type(), not isinstance(): isinstance() asks an object for its __class__, which makes a lazy
    # object (SimpleLazyObject, a test response's resolver_match…) evaluate itself, and fail.
    return [
        found
        for found in gc.get_objects()
        if issubclass(type(found), BaseScheduler)
        and not issubclass(type(found), Scheduler)
        and found.state != STATE_STOPPED
    ]


def started_scheduler_messages(schedulers: list[Any]) -> list[checks.CheckMessage]:
    if not schedulers:
        return []
    kinds = ", ".join(sorted({type(scheduler).__name__ for scheduler in schedulers}))
    return [
        checks.Error(
            f"An APScheduler scheduler ({kinds}) is already running while Django starts: it was started at "
            "import time or in an AppConfig.ready(). Under a web server with several workers (gunicorn, "
            "uWSGI), every worker runs every job, each time.",
            hint=_(
                "Remove that start-up code and declare the jobs with @job; run 'manage.py runscheduler' "
                "beside the web server, or set SCHEDULING_EMBEDDED = True "
                "(one active scheduler across workers)."
            ),
            id="scheduling.E002",
        )
    ]


def check_metrics(**kwargs: Any) -> list[checks.CheckMessage]:
    installed = importlib.util.find_spec("prometheus_client") is not None
    return metrics_messages(settings.METRICS_ACCESS, installed)


def metrics_messages(access: object, client_installed: bool) -> list[checks.CheckMessage]:
    try:
        rule = metrics_access.parse(access)
    except ValueError as exc:
        return [
            checks.Error(
                f"SCHEDULING_METRICS_ACCESS cannot be read: {exc}.",
                hint=_(
                    "Use None (metrics off), 'token' (API tokens of users with view_job), 'staff', or a "
                    "list of addresses and networks such as ['127.0.0.1', '10.0.0.0/8']."
                ),
                id="scheduling.E005",
            )
        ]
    if rule is None or client_installed:
        return []
    return [
        checks.Warning(
            "SCHEDULING_METRICS_ACCESS is set but prometheus-client is not installed: the metrics "
            "endpoint answers 501.",
            hint=_(
                "pip install 'django-scheduling[metrics]' (or prometheus-client), or unset "
                "SCHEDULING_METRICS_ACCESS."
            ),
            id="scheduling.W006",
        )
    ]
