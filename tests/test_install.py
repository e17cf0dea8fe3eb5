"""The app as a wheel in a brand-new site, set up exactly as the README says.

The wheel is built from this checkout and installed into a fresh virtualenv; a site is created
with ``django-admin startproject`` and each Python snippet of the README's "Adding it to an
existing site" section is appended to the file its first line names, so the README and this test
cannot drift apart. Every command then runs with the fresh virtualenv's Python, in a temporary
folder and with nothing pointing at the checkout: what works here works from the wheel alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import django
import pytest
from django.db import connection
from uv import find_uv_bin

from tests.conftest import ROOT, wait_for

pytestmark = [
    pytest.mark.processes,
    # A virtualenv and a site of its own, independent of the test database: the SQLite cell is
    # enough, which the matrix runs once (processes tests run on its first Python only).
    pytest.mark.skipif(connection.vendor != "sqlite", reason="runs once per matrix: in the SQLite cell"),
]

SECTION = "## Adding it to an existing site"
UV = find_uv_bin()
# What a shell outside the checkout would have: no settings module, no path or virtualenv of ours.
ENV = {
    **{
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "DJANGO", "SCHEDULING", "DATABASE_URL", "VIRTUAL_ENV"))
    },
    "PYTHONUNBUFFERED": "1",
}
# Run in the new site's shell while its scheduler runs: the health endpoint, the admin's job list
# (the app's templates, template tags and built-in job, from the wheel) and whose admin is registered.
# "localhost" is among the hosts DEBUG allows by default.
PROBE = """
import json
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django_apscheduler.models import DjangoJob

client = Client(HTTP_HOST="localhost")
health = client.get(reverse("scheduling:health"))
client.force_login(User.objects.create_superuser("admin", "admin@example.com", "unused-password"))
jobs_page = client.get(reverse("admin:scheduling_job_changelist"))
print(json.dumps({
    "health": [health.status_code, health.json()],
    "jobs_page": [jobs_page.status_code, jobs_page.content.decode()],
    "django_apscheduler_admin": admin.site.is_registered(DjangoJob),
}))
"""


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start)]


def python_snippets(section: str) -> list[tuple[str, str]]:
    """(file, code) of each fenced Python block; its first line is a comment naming the file."""
    snippets = []
    for match in re.finditer(r"^( *)```python\n(.*?)^\1```$", section, re.MULTILINE | re.DOTALL):
        code = textwrap.dedent(match.group(2))
        first_line = code.partition("\n")[0]
        assert first_line.startswith("# "), f"this README snippet does not name its file:\n{code}"
        snippets.append((first_line.removeprefix("# "), code))
    return snippets


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as ``make wheel`` does, from a copy of the checkout without build leftovers.

    setuptools reuses the file list of a ``*.egg-info`` left by an earlier build, which would hide a
    packaging mistake; building in a copy also leaves the checkout untouched.
    """
    source = tmp_path_factory.mktemp("checkout") / "source"
    leftovers = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "*.sqlite3*")
    shutil.copytree(ROOT, source, ignore=leftovers)
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--quiet", "--python", sys.executable, "--out-dir", out, source, cwd=out)
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_the_app_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA")))
    packaged = {name for name in names if ".dist-info/" not in name}
    app = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "scheduling").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {
        "scheduling/jobs.py",
        "scheduling/migrations/0001_initial.py",
        "scheduling/py.typed",
        "scheduling/templates/admin/scheduling/index.html",
        "scheduling/templatetags/scheduling_admin.py",
        "scheduling/locale/ja/LC_MESSAGES/django.mo",
        "scheduling/locale/zh_Hans/LC_MESSAGES/django.mo",
    } <= app
    # Every file of the app (templates, migrations and compiled catalogues too), and no demo project,
    # tests or benchmarks.
    assert packaged == app
    # What the app imports at run time; dj-database-url and psycopg are the demo site's. The
    # monitoring integrations are extras, installed only by who asks for them.
    requirements = re.findall(r"^Requires-Dist: ([\w-]+)(.*)$", metadata.decode(), re.MULTILINE)
    required = {name for name, rest in requirements if "extra ==" not in rest}
    assert required == {"django", "apscheduler", "django-apscheduler", "asgiref", "cron-descriptor"}
    extras = {
        name: re.findall(r'extra == "(\w+)"', rest)[0] for name, rest in requirements if "extra ==" in rest
    }
    assert extras == {"prometheus-client": "metrics", "sentry-sdk": "sentry", "opentelemetry-api": "otel"}


@pytest.mark.timeout(300)
def test_a_new_site_set_up_as_the_readme_says_runs_a_job_from_the_wheel(
    wheel: Path, tmp_path: Path, figures
) -> None:
    section = readme_section()
    snippets = python_snippets(section)
    (jobs_file,) = [name for name, _ in snippets if name.endswith("/jobs.py")]
    app = jobs_file.partition("/")[0]
    shown = re.search(r"manage\.py scheduling show (\S+)", section)
    assert shown is not None, "the README shows a job with `manage.py scheduling show`"
    job_id = shown.group(1)

    started = time.monotonic()
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    django_version = "{}.{}".format(*django.VERSION[:2])  # the version this cell of the matrix claims
    installs: list[str | Path] = [wheel, f"django~={django_version}.0"]
    run(UV, "pip", "install", "--quiet", "--python", python, *installs, cwd=tmp_path)
    installed = time.monotonic() - started
    imported_from = run(python, "-c", "import scheduling; print(scheduling.__file__)", cwd=tmp_path)
    assert Path(imported_from.strip()).is_relative_to(venv)

    run(venv / "bin" / "django-admin", "startproject", "mysite", cwd=tmp_path)
    site = tmp_path / "mysite"
    # The README's job goes into one of the site's own apps; a real site has them already.
    run(python, "manage.py", "startapp", app, cwd=site)
    with (site / "mysite" / "settings.py").open("a") as settings:
        settings.write(f"\nINSTALLED_APPS += [{app!r}]\n")
    for name, code in snippets:
        # settings.py and urls.py are the project package's; other paths start at the site's root.
        with (site / name if "/" in name else site / "mysite" / name).open("a") as target:
            target.write("\n" + code)

    run(python, "manage.py", "migrate", "--no-input", cwd=site)
    run(python, "manage.py", "check", "--fail-level", "WARNING", cwd=site)

    log = tmp_path / "runscheduler.log"
    with log.open("w") as output:
        scheduler = subprocess.Popen(
            [python, "manage.py", "runscheduler"], cwd=site, env=ENV, stdout=output, stderr=subprocess.STDOUT
        )
    scheduler_started = time.monotonic()

    def succeeded_runs() -> list[dict[str, object]]:
        assert scheduler.poll() is None, log.read_text()
        shown = json.loads(run(python, "manage.py", "scheduling", "show", job_id, "--json", cwd=site))
        return [entry for entry in shown["runs"] if entry["status"] == "succeeded"]

    try:
        # The job is stored once the start-up summary is printed; only then can it be shown.
        wait_for(lambda: "Stop with Ctrl-C" in log.read_text() or scheduler.poll() is not None, timeout=60)
        wait_for(succeeded_runs, timeout=60, interval=0.5)
        recorded = time.monotonic() - scheduler_started
        probe = json.loads(run(python, "manage.py", "shell", "-v", "0", "-c", PROBE, cwd=site))
        assert probe["health"] == [200, {**probe["health"][1], "status": "ok", "active_scheduler": True}]
        code, jobs_page = probe["jobs_page"]
        assert code == 200
        assert job_id in jobs_page
        assert "scheduling.prune_history" in jobs_page
        # Registered after django_apscheduler, as the README asks, our admin replaced its pages.
        assert probe["django_apscheduler_admin"] is False

        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(timeout=30) == 0, log.read_text()
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    figures(
        f"fresh site from the wheel (Django {django_version}): virtualenv and install in {installed:.1f} s, "
        f"first run of {job_id} recorded {recorded:.1f} s after runscheduler started, SIGTERM exit 0"
    )
