"""Settings for the placement benchmark: the demo site's, with the tasks framework and django-tasks-db."""

import os
from typing import Any

import django

from config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, *(["django_tasks"] if django.VERSION < (6, 0) else []), "django_tasks_db"]  # noqa: F405
TASKS: dict[str, dict[str, Any]] = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
# BENCH_TASK_BACKEND "rq" or "celery": their backend is the alias "placed", on the measurement's own
# queue (BENCH_TASK_QUEUE), and lets a run take as long as it takes. "default" stays django-tasks-db:
# the scheduler's task is declared on the default backend's "default" queue.
BACKEND = os.environ.get("BENCH_TASK_BACKEND", "db")
QUEUE = os.environ.get("BENCH_TASK_QUEUE", "default")
if BACKEND == "rq":
    INSTALLED_APPS += ["django_rq", "django_tasks_rq"]
    MIGRATION_MODULES = {"django_rq": None}  # its dashboard's tables: the benchmark does not use them
    RQ_QUEUES = {
        QUEUE: {"URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "DEFAULT_TIMEOUT": -1}
    }
    TASKS["placed"] = {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": [QUEUE]}
elif BACKEND == "celery":
    CELERY_BROKER_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    TASKS["placed"] = {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "QUEUES": [QUEUE],
        "OPTIONS": {"CELERY_APP": "bench.celery_app.app"},
    }
SCHEDULING_MODULES = ["bench.placement_jobs"]
SCHEDULING_THREADS = 10
SCHEDULING_PROCESSES = int(os.environ.get("BENCH_PROCESSES", "2"))
LOGGING = {"version": 1, "disable_existing_loggers": False}
