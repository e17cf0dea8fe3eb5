"""System checks for configurations that make scheduling unsafe or fragile."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core import checks

from scheduling.conf import settings


def register() -> None:
    checks.register(check_embedded_database, checks.Tags.database)
    checks.register(check_time_zone_support)
    checks.register(check_sqlite_locking, checks.Tags.database)


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
                hint="Use a file or server database, or run 'manage.py runscheduler' instead.",
                id="scheduling.E001",
            )
        ]
    return []


def time_zone_messages(use_tz: bool) -> list[checks.CheckMessage]:
    if use_tz:
        return []
    return [
        checks.Warning(
            "USE_TZ is off: run times are stored without a time zone, so they shift when the server's "
            "time zone or daylight-saving time changes.",
            hint="Set USE_TZ = True.",
            id="scheduling.W001",
        )
    ]


def sqlite_locking_messages(databases: dict[str, dict[str, Any]]) -> list[checks.CheckMessage]:
    return [
        checks.Warning(
            f"The SQLite database '{alias}' uses deferred transactions: the scheduler and the web server "
            "writing at once fail with 'database is locked'.",
            hint="Set DATABASES[...]['OPTIONS'] = {'transaction_mode': 'IMMEDIATE', 'timeout': 20} "
            "(and PRAGMA journal_mode=WAL in 'init_command').",
            id="scheduling.W002",
        )
        for alias, database in _sqlite(databases).items()
        if str(database.get("OPTIONS", {}).get("transaction_mode", "")).upper() != "IMMEDIATE"
    ]
