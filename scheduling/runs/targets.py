"""The run target of each placement, as the dispatcher holds them (see scheduling.runs.base)."""

from __future__ import annotations

from scheduling.placement import RunsIn
from scheduling.runs.base import RunTarget
from scheduling.runs.processes import ProcessPool, ProcessPoolTarget
from scheduling.runs.task_workers import TaskWorkerTarget
from scheduling.runs.threads import ThreadTarget


def run_targets(threads: ThreadTarget, processes: ProcessPool | None = None) -> dict[RunsIn, RunTarget]:
    """Threads, the process pool (supervised from ``threads``) and task workers, by placement.

    Without a pool (tests, scripts), jobs placed in the process pool run on the threads.
    """
    return {
        RunsIn.THREADS: threads,
        RunsIn.PROCESSES: threads if processes is None else ProcessPoolTarget(threads, processes),
        RunsIn.TASKS: TaskWorkerTarget(threads.recorder),
    }
