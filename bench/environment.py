"""What a result depends on: versions, machine, load; printed above the table."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, version

from bench.paths import ROOT


def compile_bytecode() -> None:
    """Compile the installed packages and the project to bytecode, as ``pip install`` does.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (this machine kind sets it), or packages were
    installed by uv (which does not compile them), a process compiles every module it imports
    from source, every time: each start-up measured then carried ~0.7 s of compiling that no
    deployed site pays. Both systems, and the limit rows, read the same bytecode.
    """
    paths = sysconfig.get_paths()
    folders = sorted({paths["purelib"], paths["platlib"]}) + [
        str(ROOT / name) for name in ("scheduling", "bench", "config")
    ]
    command = [sys.executable, "-m", "compileall", "-q", "-j", "0", *folders]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def postgres_version(url: str) -> str:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "unknown"
    except Exception as exc:  # any failure only means the version is unknown
        return f"unknown ({type(exc).__name__})"


def mariadb_version(server: dict[str, object]) -> str:
    try:
        import MySQLdb  # type: ignore[import-untyped]

        connection = MySQLdb.connect(**server, connect_timeout=3)
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT VERSION()")
            row = cursor.fetchone()
            return str(row[0]) if row else "unknown"
        finally:
            connection.close()
    except Exception as exc:  # any failure only means the version is unknown
        return f"unknown ({type(exc).__name__})"


def driver_versions() -> str:
    found = []
    for name in ("psycopg", "mysqlclient"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:  # a driver not installed is left out of the line
            continue
    return ", ".join(found)


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: S603, S607

    completed, dirty = (
        git("rev-parse", "--short", "HEAD"),
        git("status", "--porcelain", "--", "bench", "scheduling"),
    )
    return completed + (" (with uncommitted changes)" if dirty else "")


def describe(postgres_url: str | None, mariadb_server: dict[str, object] | None = None) -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; git commit {git_commit()}",
        f"- Python {platform.python_version()}, Django {version('django')}, "
        f"APScheduler {version('apscheduler')}, django-apscheduler {version('django-apscheduler')}, "
        f"{driver_versions()}",
        f"- machine: {os.cpu_count()} CPU(s), {cpu_model()}; load average at start {load}",
        "- bytecode: the packages and the project compiled before measuring (compileall), as pip "
        "installs them",
        f"- SQLite {sqlite3.sqlite_version}"
        + (f"; PostgreSQL {postgres_version(postgres_url)}" if postgres_url else "")
        + (f"; MariaDB {mariadb_version(mariadb_server)}" if mariadb_server else ""),
    ]
    return "\n".join(lines)
