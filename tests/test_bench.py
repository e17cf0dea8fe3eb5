"""The benchmark still runs end to end (``python -m bench --quick``): no figures are asserted.

Its targets live in its output and in bench/RESULTS.md, not in timed tests. It runs on the same
kind of database as the suite, but in a database of its own (PostgreSQL and MariaDB:
``<test database>_bench``, dropped and created by the benchmark; SQLite: a temporary file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from bench.run import parse_args
from tests.conftest import ROOT

pytestmark = pytest.mark.processes


# Above the suite's 180 s per test: the quick run alone takes 2-3 minutes on a busy machine.
@pytest.mark.timeout(330)
def test_the_quick_benchmark_runs_and_prints_every_row(tmp_path: Path) -> None:
    env = {**os.environ}
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    server = f"{settings.get('USER') or ''}{password}@{settings.get('HOST')}:{settings.get('PORT')}"
    if connection.vendor == "postgresql":
        env["BENCH_POSTGRES_URL"] = f"postgres://{server}/{settings['NAME']}_bench"
        database = "postgres"
    elif connection.vendor == "mysql":
        env["BENCH_MARIADB_URL"] = f"mysql://{server}/{settings['NAME']}_bench"
        database = "mariadb"
    elif connection.vendor == "sqlite":
        database = "sqlite"
    else:
        pytest.skip(f"the benchmark runs on SQLite, PostgreSQL and MariaDB, not {connection.vendor}")
    out = tmp_path / "table.md"

    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--databases", database, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = out.read_text()
    quick = parse_args(["--quick"])
    for measure in [
        "lateness p99",
        "executions/s with history",
        "SQL statements per run",
        "start-up",
        "CPU (%",
        "limit: one empty round trip",
        "limit: 20 runs at one instant",
        f"start-up with {quick.large_jobs:,} jobs, restart",
        "memory per stored job",
        "chaos mix, 10 jobs, faults off",
        "fencing's cost",
    ]:
        assert measure in table
    assert "admin jobs changelist" in table
    assert "api jobs list: queries at 10 jobs / 100 executions" in table
    assert "admin timeline, 100 jobs / 1,000 runs in the window: render (ms)" in table
