"""The task that task workers run, at the path tasks enqueued before 2026-12 name.

Django's tasks framework stores a task by its import path; a worker resolves it when it takes
the task. The task is defined in :mod:`scheduling.runs.worker_task`; this path keeps the tasks
enqueued by earlier versions, and still waiting in a queue, runnable after an upgrade.
"""

from scheduling.runs.worker_task import run_scheduled_job

__all__ = ["run_scheduled_job"]
