"""Settings for the placement benchmark: the demo site's, with the tasks framework and django-tasks-db."""

import os

import django

from config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, *(["django_tasks"] if django.VERSION < (6, 0) else []), "django_tasks_db"]  # noqa: F405
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
SCHEDULING_MODULES = ["bench.placement_jobs"]
SCHEDULING_THREADS = 10
SCHEDULING_PROCESSES = int(os.environ.get("BENCH_PROCESSES", "2"))
LOGGING = {"version": 1, "disable_existing_loggers": False}
