"""Runs placed in task workers, the scheduler's side: counting, enqueueing, recording task ids.

max_instances keeps its meaning across machines: it counts the job's runs that are enqueued or
running anywhere, as the history records them, since no single process sees them all. The
tasks framework itself is imported only when a run is enqueued (scheduling.runs.worker_task).
"""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.job import Job
from django.db.models import Count

from scheduling import signals
from scheduling.history.recorder import Recorder
from scheduling.history.retry import retrying
from scheduling.history.rows import Origin, describe_exception
from scheduling.models import HANDED_OVER, Execution
from scheduling.placement import Placement, RunsIn
from scheduling.policy import RunPolicy
from scheduling.runs.base import slots_left
from scheduling.runs.observers import trace_context
from scheduling.runs.task_calls import TRACEPARENT, frozen
from scheduling.signals import notify
from scheduling.sql import update_rows

logger = logging.getLogger(__name__)


class TaskWorkerTarget:
    """Task workers as a run target: each fire is a task of its own, enqueued on the job's backend
    and queue, and max_instances counts the job's runs enqueued or running anywhere."""

    runs_in = RunsIn.TASKS
    holds_runs = False  # a worker would start an enqueued run at once: fires are claimed once due

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._busy: dict[str, int] = {}

    def count_busy(self, jobs: list[Job]) -> None:
        """Count the runs enqueued or running of all of ``jobs`` in one query (a queued fire
        holds its slot as a pending retry does: the dispatcher counts those)."""
        self._busy = {}
        if not jobs:
            return
        rows = (
            Execution.objects.filter(job_id__in=[job.id for job in jobs], status__in=HANDED_OVER)
            .values_list("job_id")
            .annotate(count=Count("pk"))
            .order_by()
        )
        self._busy = dict(rows)

    def reserve(self, job: Job, fires: int = 1, waiting: int = 0) -> int:
        """One slot per fire: each runs as a task of its own, perhaps at the same time."""
        allowed = min(slots_left(job, self._busy.get(job.id, 0) + waiting), fires)
        self._busy[job.id] = self._busy.get(job.id, 0) + allowed
        return allowed

    def release(self, job: Job) -> None:
        """Nothing to give back: the slots are counted anew from the history for each pass."""

    def row(self, job: Job, scheduled_at: datetime, origin: Origin) -> Execution:
        """An enqueued row, with the frozen call a worker runs even if the job left the store.

        When the dispatch is traced, the frozen call also carries its trace context
        (``traceparent``), for the span of the run in the worker: the task itself carries only
        the run's id, and a column of its own would need a migration for what one key holds.
        """
        call = frozen(job)
        if call is not None and (traceparent := trace_context()) is not None:
            call[TRACEPARENT] = traceparent
        return self.recorder.running_row(job.id, scheduled_at, origin, ran_in=self.runs_in, call=call)

    def submit(self, job: Job, executions: list[Execution], origin: Origin, policy: RunPolicy) -> int:
        """Enqueue runs already recorded as enqueued, then record their task ids in one UPDATE.

        The worker reads the job's run policy itself when it takes the run.
        """
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
        return 0

    @staticmethod
    def _not_enqueued(execution: Execution, placement: Placement, exc: Exception) -> None:
        message, formatted = describe_exception(exc)
        message = f"Could not enqueue the run for {placement.describe()}: {message}"
        logger.error("Job %s: %s", execution.job_id, message)
        execution.status, execution.exception = Execution.Status.FAILED, message
        retrying(
            lambda: Execution.objects.filter(pk=execution.pk).end_unstarted(
                Execution.Status.FAILED, message, formatted
            ),
            f"record that job {execution.job_id} could not be enqueued",
        )
        notify(signals.job_failed, execution)
