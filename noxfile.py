"""The test matrix: Python x Django x database, plus static checks.

``nox`` runs everything (that is what ``make test`` and CI do); ``nox -s "tests-3.11(sqlite)"``
runs one cell. Multi-process and browser suites run once per database, on the first Python of the
matrix.
"""

from __future__ import annotations

import os
import socket

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

DATABASE_URLS = {
    "sqlite": None,
    "postgres": os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
# (python, django, database, run the multi-process and browser suites)
MATRIX = [
    ("3.11", "5.2", "sqlite", True),
    ("3.11", "5.2", "postgres", True),
    ("3.11", "5.2", "mariadb", True),
    ("3.13", "6.1", "sqlite", False),
    ("3.13", "6.1", "postgres", False),
    ("3.13", "6.1", "mariadb", False),
]


def install(session: nox.Session, django: str, database: str) -> None:
    requirements = ["-r", "requirements.txt", "-r", "requirements-dev.txt"]
    if database == "mariadb":
        requirements += ["-r", "requirements-mysql.txt"]
    if django.startswith("5."):
        requirements.append("django-tasks>=0.12")  # the backport of Django 6's tasks framework
    session.install(*requirements, f"django~={django}.0")


def require_reachable(session: nox.Session, url: str) -> None:
    """Fail (in CI) or skip (elsewhere) when a database of the matrix cannot be reached."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as exc:
        message = f"{parts.scheme} at {parts.hostname}:{parts.port} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            session.error(message)
        session.skip(message)


@nox.session
@nox.parametrize(
    "python,django,database,processes",
    MATRIX,
    ids=[f"{python}-django{django}-{database}" for python, django, database, _ in MATRIX],
)
def tests(session: nox.Session, django: str, database: str, processes: bool) -> None:
    url = DATABASE_URLS[database]
    env = {}
    if url:
        require_reachable(session, url)
        env["DATABASE_URL"] = url
    install(session, django, database)
    if session.posargs:
        session.run("pytest", *session.posargs, env=env)
        return
    # The tests of one process run on two workers, each on a test database of its own; the
    # multi-process and browser suites run after them, alone, as their deadlines assume a machine
    # that is not busy with other tests.
    session.run("pytest", "-n", "2", "-m", "not processes and not browser", "tests", env=env)
    if processes:
        session.run("pytest", "-m", "processes or browser", "tests", env=env)
    elif database == "postgres":
        # django-tasks-celery needs Python 3.12+ and Django 6: its placement test runs here, once.
        session.run("pytest", "-m", "processes", "tests/test_placements.py", "-k", "celery", env=env)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    install(session, "5.2", "sqlite")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "scheduling", "config", "tests", "bench")
    session.run("lint-imports")  # the layers of docs/design.md, "How the code is laid out"
    session.run(
        "python",
        "manage.py",
        "makemigrations",
        "--check",
        "--dry-run",
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
