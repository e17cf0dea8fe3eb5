"""Running queued tasks inside the test process, as `manage.py db_worker --batch` would."""

from __future__ import annotations


def work_off() -> None:
    """Run every queued task of django-tasks-db's default backend, then return."""
    from django_tasks_db.management.commands.db_worker import Worker

    Worker(
        queue_names=["*"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()
