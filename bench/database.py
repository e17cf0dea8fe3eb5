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

# A database of the benchmark's own, dropped and created again on each run.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench")


def postgres_server_url() -> str:
    """The server's maintenance database, from which the benchmark's own is dropped and created."""
    return urlsplit(POSTGRES_URL)._replace(path="/postgres").geturl()


def url_for(vendor: str) -> str:
    if vendor == "postgres":
        return POSTGRES_URL
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='scheduling-bench-')) / 'bench.sqlite3'}"


def prepare(vendor: str, env: dict[str, str]) -> None:
    """Create (PostgreSQL: drop and recreate) the database and apply the migrations."""
    if vendor == "postgres":
        import psycopg

        name = urlsplit(POSTGRES_URL).path.lstrip("/")
        if name in {"test", "test_test", "postgres"}:
            raise SystemExit(f"Refusing to drop database {name!r}: give the benchmark a database of its own")
        with psycopg.connect(postgres_server_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def tables() -> list[str]:
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    from scheduling.models import Execution, Lease, RunRequest, ScheduledJob, SchedulerInstance

    models = [Execution, DjangoJobExecution, DjangoJob, ScheduledJob, RunRequest, Lease, SchedulerInstance]
    return [model._meta.db_table for model in models]


def clear() -> None:
    """Empty every table either system writes, so each measurement starts from nothing."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables())} CASCADE")
        else:
            for table in tables():
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - table names from the models
