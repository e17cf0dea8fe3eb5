"""What a scheduler checks before it starts: a reachable, migrated database, and no scheduler on
another machine sharing a SQLite file.
"""

from __future__ import annotations

import socket

from django.core import checks
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils.translation import gettext as _

from scheduling.models import SchedulerInstance


class SchedulerStartError(Exception):
    """The scheduler cannot start; the message says why and what to do."""


def check_database(alias: str = "default") -> None:
    """Fail clearly when the database is unreachable or not fully migrated."""
    connection = connections[alias]
    where = f"{connection.vendor} database {connection.settings_dict.get('NAME')!s}"
    host = connection.settings_dict.get("HOST")
    if host:
        where += f" on {host}:{connection.settings_dict.get('PORT') or 'default port'}"
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise SchedulerStartError(f"Cannot reach the {where}: {exc}".strip()) from exc
    if plan:
        pending = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan)
        raise SchedulerStartError(
            f"The {where} has {len(plan)} unapplied migration(s): {pending}. Run 'manage.py migrate' first."
        )


def check_sqlite_machines(alias: str = "default") -> None:
    """Refuse to start beside a live scheduler on another machine sharing this SQLite file (E003).

    The system check sees only schedulers already running; here this machine counts too.
    """
    if connections[alias].vendor != "sqlite":
        return
    hosts = set(SchedulerInstance.objects.alive().values_list("hostname", flat=True))
    for message in sqlite_hosts_messages(hosts | {socket.gethostname()}):
        raise SchedulerStartError(f"{message.msg} {message.hint} ({message.id})")


def sqlite_hosts_messages(hosts: set[str]) -> list[checks.CheckMessage]:
    if len(hosts) < 2:
        return []
    return [
        checks.Error(
            f"Schedulers on {len(hosts)} machines ({', '.join(sorted(hosts))}) use one SQLite database. "
            "SQLite's file locks do not work reliably across machines (network file systems), so the "
            "lease cannot guarantee a single active scheduler.",
            hint=_(
                "Use PostgreSQL or MariaDB for schedulers on several machines, or run them on one machine."
            ),
            id="scheduling.E003",
        )
    ]
