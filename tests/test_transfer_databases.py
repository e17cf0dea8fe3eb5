"""Export on one database, import on another (SQLite → PostgreSQL), as real manage.py runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.processes

SERVER = "postgres://postgres@127.0.0.1:5432"
# Of this run's own, created and dropped here: two runs of the suite at once never share it.
DATABASE = f"export_e2e_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database, dropped after the test; skipped when the server is away."""
    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable on {SERVER}: {exc}")
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
        try:
            yield f"{SERVER}/{DATABASE}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def manage(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "SCHEDULING_TEST_MODULES": "tests.support.transfer_declared",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def test_schedules_exported_from_sqlite_are_imported_into_postgresql_exactly(
    tmp_path: Path, postgres_database: str
) -> None:
    sqlite = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    manage(sqlite, "migrate", "--no-input")
    manage(sqlite, "shell", "-c", "from tests.support.transfer_jobs import populate; populate()")
    exported = manage(sqlite, "scheduling", "export").stdout
    schedules = tmp_path / "schedules.json"
    schedules.write_text(exported)

    manage(postgres_database, "migrate", "--no-input")
    manage(
        postgres_database,
        "shell",
        "-c",
        "from django.contrib.auth.models import Permission, User; "
        "User.objects.create_user('viewer'); "
        "User.objects.create_user('deploy').user_permissions.set("
        "Permission.objects.filter(content_type__app_label='scheduling', codename__in=["
        "'add_job', 'change_schedule', 'pause_job', 'add_calendar']))",
    )
    refused = manage(
        postgres_database, "scheduling", "import", str(schedules), "--user", "nobody", check=False
    )
    assert refused.returncode == 1
    assert "No user named 'nobody'; nothing was changed" in refused.stderr
    refused = manage(
        postgres_database, "scheduling", "import", str(schedules), "--user", "viewer", check=False
    )
    assert refused.returncode == 1
    assert "user 'viewer' lacks the permission scheduling.add_calendar (added calendar" in refused.stderr

    dry = manage(postgres_database, "scheduling", "import", str(schedules), "--user", "deploy", "--dry-run")
    assert dry.stdout.splitlines()[-1].startswith("Dry run: 6 added")
    assert json.loads(manage(postgres_database, "scheduling", "export").stdout)["jobs"] == []

    applied = manage(postgres_database, "scheduling", "import", str(schedules), "--user", "deploy")
    assert "skipped   job stray" in applied.stderr
    assert applied.stdout.splitlines()[-1].startswith("Imported as deploy: 6 added, 1 changed")

    expected = json.loads(exported)
    expected["jobs"] = [entry for entry in expected["jobs"] if entry["declared"]]
    again = manage(postgres_database, "scheduling", "export").stdout
    assert json.loads(again) == expected
    assert again == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"  # byte for byte
