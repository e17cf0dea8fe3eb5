"""Runs placed in task workers, the scheduler's side: counting, enqueueing, recording task ids.

max_instances keeps its meaning across machines: it counts the job's runs that are enqueued or
running anywhere, as the history records them, since no single process sees them all. The
tasks framework itself is imported only when a run is enqueued (scheduling.runs.worker_task).
"""

from __future__ import annotations

import logging

from apscheduler.job import Job
from django.db.models import Count
from django.utils import timezone

from scheduling import signals
from scheduling.history.recorder import Recorder
from scheduling.history.retry import retrying
from scheduling.history.rows import UNFINISHED, describe_exception
from scheduling.models import Execution
from scheduling.placement import Placement
from scheduling.runs.threads import notify
from scheduling.sql import update_rows

logger = logging.getLogger(__name__)


class TaskHandOff:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def unfinished(self, jobs: list[Job]) -> dict[str, int]:
        """Runs enqueued or running, by job id, for all of ``jobs`` in one query."""
        if not jobs:
            return {}
        rows = (
            Execution.objects.filter(job_id__in=[job.id for job in jobs], status__in=UNFINISHED)
            .values_list("job_id")
            .annotate(count=Count("pk"))
            .order_by()
        )
        return dict(rows)

    def reserve(self, job: Job, unfinished: dict[str, int] | None = None) -> bool:
        """Whether another run of ``job`` may start: fewer than max_instances enqueued or running.

        ``unfinished`` is :meth:`unfinished` for a batch the job is part of; else it is counted now.
        """
        counts = self.unfinished([job]) if unfinished is None else unfinished
        return counts.get(job.id, 0) < job.max_instances

    def submit(self, job: Job, executions: list[Execution]) -> None:
        """Enqueue runs already recorded as enqueued, then record their task ids in one UPDATE."""

        from scheduling.runs import worker_task  # loads the tasks framework only for sites that use it

        placement = Placement.of(job.executor)
        task_ids = []
        for execution in executions:
            try:
                execution.task_id = worker_task.enqueue(execution, job)
            # Whatever the backend raises (unreachable broker, unknown queue), the run did not go out.
            except Exception as exc:
                self._not_enqueued(execution, placement, exc)
                continue
            task_ids.append((execution.pk, {"task_id": execution.task_id}))
        # A worker that took a task before this UPDATE has written the same id already.
        retrying(
            lambda: update_rows(Execution, task_ids, ["task_id"], "AND task_id = %s", [""]),
            f"record the task ids of {len(task_ids)} run(s) of job {job.id}",
        )

    @staticmethod
    def _not_enqueued(execution: Execution, placement: Placement, exc: Exception) -> None:
        message, formatted = describe_exception(exc)
        message = f"Could not enqueue the run for {placement.describe()}: {message}"
        logger.error("Job %s: %s", execution.job_id, message)
        execution.status, execution.exception = Execution.Status.FAILED, message
        retrying(
            lambda: Execution.objects.filter(pk=execution.pk, status=Execution.Status.ENQUEUED).update(
                status=Execution.Status.FAILED,
                finished_at=timezone.now(),
                exception=message,
                traceback=formatted,
            ),
            f"record that job {execution.job_id} could not be enqueued",
        )
        notify(signals.job_failed, execution)
