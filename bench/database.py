"""The benchmark's own databases: created, migrated and emptied between measurements.

Never the test suite's databases (``test``, ``test_test``), which CI uses at the same time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from django.db import connection

from bench.paths import ROOT

# Databases of the benchmark's own, dropped and created again on each run.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench")
MARIADB_URL = os.environ.get("BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/bench")
VENDORS = ("sqlite", "postgres", "mariadb")
# Names the benchmark never drops: the test suite's, and each server's own.
PROTECTED = {"test", "test_test", "postgres", "mysql", "information_schema", "performance_schema", "sys"}


def postgres_server_url() -> str:
    """The server's maintenance database, from which the benchmark's own is dropped and created."""
    return urlsplit(POSTGRES_URL)._replace(path="/postgres").geturl()


def url_for(vendor: str) -> str:
    if vendor == "postgres":
        return POSTGRES_URL
    if vendor == "mariadb":
        return MARIADB_URL
    if vendor != "sqlite":
        raise SystemExit(f"Unknown database {vendor!r}: choose from {', '.join(VENDORS)}")
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='scheduling-bench-')) / 'bench.sqlite3'}"


def own_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name or name in PROTECTED:
        raise SystemExit(f"Refusing to drop database {name!r}: give the benchmark a database of its own")
    return name


def recreate_postgres() -> None:
    import psycopg

    name = own_name(POSTGRES_URL)
    with psycopg.connect(postgres_server_url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def mariadb_server() -> dict[str, object]:
    """Connection arguments of MySQLdb for the server of ``MARIADB_URL``, no database selected."""
    parts = urlsplit(MARIADB_URL)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
    }


def recreate_mariadb() -> None:
    import MySQLdb  # type: ignore[import-untyped]

    name = own_name(MARIADB_URL)
    admin = MySQLdb.connect(**mariadb_server())
    try:
        cursor = admin.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        admin.close()


def prepare(vendor: str, env: dict[str, str]) -> None:
    """Create (PostgreSQL, MariaDB: drop and recreate) the database and apply the migrations."""
    if vendor == "postgres":
        recreate_postgres()
    elif vendor == "mariadb":
        recreate_mariadb()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def tables() -> list[str]:
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    from scheduling.models import Execution, Lease, RunRequest, ScheduledJob, SchedulerInstance

    models = [Execution, DjangoJobExecution, DjangoJob, ScheduledJob, RunRequest, Lease, SchedulerInstance]
    return [model._meta.db_table for model in models]


def clear() -> None:
    """Empty every table either system writes, so each measurement starts from nothing.

    TRUNCATE where the database has it: a DELETE of the admin measure's 10,000,000 rows takes
    minutes on PostgreSQL and MariaDB (SQLite's DELETE without WHERE truncates already).
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables())} CASCADE")
        elif connection.vendor == "mysql":
            # MariaDB refuses to TRUNCATE a table that a foreign key names, even an empty one.
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            try:
                for table in tables():
                    cursor.execute(f"TRUNCATE TABLE {table}")
            finally:
                cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in tables():
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - table names from the models
