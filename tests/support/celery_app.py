"""The Celery app of tests/test_placements.py's workers: ``celery -A tests.support.celery_app worker``.

As a site's own ``proj/celery.py``: settings from Django's (``CELERY_*``), and Django set up before
the worker takes tasks, which imports the job declarations and so registers the scheduler's task
with Celery (django-tasks-celery does it as the task is bound to its backend).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_placements")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
