"""Settings of the processes of tests/test_placements.py: runs placed on RQ or Celery workers.

``SCHEDULING_TEST_PLACEMENT`` names the broker ("rq" or "celery") and ``SCHEDULING_TEST_TASK_QUEUE``
a queue of the test's own (it carries a uuid), so that test runs sharing a Redis or a RabbitMQ never
take each other's tasks. The queue is the only one of the task backend alias ``placed``; django-tasks-db
stays the ``default`` alias, as in tests/settings.py.
"""

import os
from typing import Any

from tests.settings import *  # noqa: F403

PLACEMENT = os.environ.get("SCHEDULING_TEST_PLACEMENT", "rq")
QUEUE = os.environ.get("SCHEDULING_TEST_TASK_QUEUE", "placements")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# The task backends must not cut a run before SCHEDULING_TASK_TIMEOUT does (scheduling.W007).
BACKEND_TIMEOUT = int(os.environ.get("SCHEDULING_TEST_BACKEND_TIMEOUT", "3600"))

if PLACEMENT == "rq":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq", "django_tasks_rq"]  # noqa: F405
    # django-rq's tables (its dashboard) are not in the test database, which tests/settings.py
    # migrated; the workers and the scheduler do not use them.
    MIGRATION_MODULES = {"django_rq": None}
    RQ_QUEUES = {QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": BACKEND_TIMEOUT}}
    TASKS = {**TASKS, "placed": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": [QUEUE]}}  # noqa: F405
elif PLACEMENT == "celery":
    CELERY_BROKER_URL = AMQP_URL
    CELERY_TASK_TIME_LIMIT = BACKEND_TIMEOUT
    # One task at a time per worker process: a prefetched task would wait behind a long run.
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    PLACED: dict[str, Any] = {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "QUEUES": [QUEUE],
        "OPTIONS": {"CELERY_APP": "tests.support.celery_app.app"},
    }
    TASKS = {**TASKS, "placed": PLACED}
