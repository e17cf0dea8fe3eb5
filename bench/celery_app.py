"""The Celery app of the placement benchmark's Celery workers (``celery -A bench.celery_app worker``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.placement_settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
