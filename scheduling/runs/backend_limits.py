"""How long a tasks backend lets one task run, for the backends known to stop long tasks.

django-tasks-db lets a task run as long as it takes. RQ stops a task after its queue's
``DEFAULT_TIMEOUT`` (``RQ_QUEUES``; RQ's own 180 s when unset, as django-tasks-rq passes no timeout
of its own): the work horse raises inside the job, and is killed a minute later if it goes on.
Celery stops one after ``task_soft_time_limit`` (an exception inside the task) or
``task_time_limit`` (the pool's child is killed); both are unset by default. Read from settings
and the Celery app's configuration, without connecting to a broker; per-task Celery annotations
are not read.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

RQ_DEFAULT_TIMEOUT = 180.0  # rq.Queue.DEFAULT_TIMEOUT, what a queue without DEFAULT_TIMEOUT gets


def time_limit(backend: dict[str, Any], queue: str) -> float | None:
    """Seconds after which the backend configured as ``backend`` (a ``TASKS`` entry) stops a task on
    ``queue``, or None if it does not (or is not one this module knows)."""
    path = str(backend.get("BACKEND", ""))
    if path.startswith("django_tasks_rq."):
        return rq_limit(queue)
    if path.startswith("django_tasks_celery."):
        return celery_limit(backend.get("OPTIONS") or {})
    return None


def rq_limit(queue: str) -> float | None:
    timeout = (getattr(settings, "RQ_QUEUES", {}).get(queue) or {}).get("DEFAULT_TIMEOUT")
    if timeout is None:
        return RQ_DEFAULT_TIMEOUT
    if isinstance(timeout, str):  # RQ accepts "30s", "10m", "1h", "2d"
        try:
            from rq.utils import parse_timeout
        except ImportError:  # django-tasks-rq's own check says what is missing
            return None
        timeout = parse_timeout(timeout)
    return None if timeout is None or float(timeout) < 0 else float(timeout)  # -1: no limit


def celery_limit(options: dict[str, Any]) -> float | None:
    # As django-tasks-celery finds it: the app named in OPTIONS, else Celery's current one.
    path = options.get("CELERY_APP", "celery.current_app")
    try:
        app = import_string(path)
    # The app cannot be loaded: django-tasks-celery's own check (E002) says why.
    except ImportError:
        return None
    limits = [app.conf.task_soft_time_limit, app.conf.task_time_limit]
    return min((float(limit) for limit in limits if limit), default=None)
