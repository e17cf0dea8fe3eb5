"""Test settings: the demo site's, with test jobs instead of the demo jobs and faster beats."""

import faulthandler
import os
import signal

import django

from config.settings import *  # noqa: F403

# Runner processes started by tests import the modules named here (comma-separated).
SCHEDULING_MODULES = [name for name in os.environ.get("SCHEDULING_TEST_MODULES", "").split(",") if name]
SCHEDULING_HEARTBEAT_INTERVAL = 1.0
# A scheduler process a test starts may poll rarely, so that only pushed changes explain a pick-up.
SCHEDULING_POLL_INTERVAL = float(os.environ.get("SCHEDULING_TEST_POLL_INTERVAL", "0.5"))
# A process a test started and that hangs is told SIGUSR1 to print every thread's stack into its log.
faulthandler.register(signal.SIGUSR1, all_threads=True)
SCHEDULING_HEARTBEAT_TIMEOUT = 5.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SCHEDULING_EMBEDDED = os.environ.get("SCHEDULING_TEST_EMBEDDED") == "1"
SCHEDULING_SHUTDOWN_TIMEOUT = 5.0

# Django's tasks framework (the django-tasks backport before Django 6), with django-tasks-db's
# queue in the same database, for jobs placed in task workers.
INSTALLED_APPS = [*INSTALLED_APPS, *(["django_tasks"] if django.VERSION < (6, 0) else []), "django_tasks_db"]  # noqa: F405
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "reports"]}}
SCHEDULING_PROCESSES = 2
SCHEDULING_TASK_TIMEOUT = float(os.environ.get("SCHEDULING_TEST_TASK_TIMEOUT", "3600"))

# Django 6.1 warns when mail is sent without MAILERS (its default mailer goes away in 2028).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

# tests/test_observers.py: the processes a test starts (children of the process pool, task
# workers) check in with its Sentry stand-in and write their spans where it reads them.
if dsn := os.environ.get("SCHEDULING_TEST_SENTRY_DSN"):
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, default_integrations=False, auto_enabling_integrations=False)
if os.environ.get("SCHEDULING_TEST_OTEL_SPANS"):
    from tests.support.telemetry import to_file_if_asked

    to_file_if_asked()
