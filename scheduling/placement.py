"""Where a job runs: the scheduler's threads, its process pool, or a worker of Django's tasks framework.

The choice is stored in the APScheduler job's ``executor`` alias, which django-apscheduler pickles
with the rest of the job, so it travels with the job through the store, the admin and other
processes without a table of its own: ``"default"`` (APScheduler's name for the only executor a
stock setup has, so every job stored before this existed runs in threads), ``"processes"``, or
``"tasks:<backend>:<queue>"``.
"""

from __future__ import annotations

from dataclasses import dataclass

THREADS = "threads"
PROCESSES = "processes"
TASKS = "tasks"
KINDS = (THREADS, PROCESSES, TASKS)

DEFAULT_ALIAS = "default"
DEFAULT_TASK_BACKEND = "default"
DEFAULT_TASK_QUEUE = "default"


class PlacementError(ValueError):
    """A placement that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Placement:
    kind: str = THREADS
    backend: str = ""
    queue: str = ""

    @classmethod
    def of(cls, alias: str) -> Placement:
        """The placement an executor alias stands for; unknown aliases run in threads, as before."""
        if alias == PROCESSES:
            return cls(PROCESSES)
        if alias.startswith(TASKS + ":"):
            _, backend, queue = [*alias.split(":", 2), "", ""][:3]
            return cls(TASKS, backend or DEFAULT_TASK_BACKEND, queue or DEFAULT_TASK_QUEUE)
        return cls(THREADS)

    @classmethod
    def build(cls, kind: str, backend: str | None = None, queue: str | None = None) -> Placement:
        """A placement from what a user declared or entered; raises PlacementError if it cannot work."""
        if kind not in KINDS:
            raise PlacementError(f"runs_in must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")
        if kind != TASKS:
            if backend or queue:
                raise PlacementError("task_backend and task_queue apply only to jobs with runs_in='tasks'")
            return cls(kind)
        backend, queue = backend or DEFAULT_TASK_BACKEND, queue or DEFAULT_TASK_QUEUE
        for label, value in (("task_backend", backend), ("task_queue", queue)):
            if ":" in value:
                raise PlacementError(f"{label} cannot contain ':' ({value!r})")
        return cls(TASKS, backend, queue)

    @property
    def alias(self) -> str:
        if self.kind == TASKS:
            return f"{TASKS}:{self.backend}:{self.queue}"
        return PROCESSES if self.kind == PROCESSES else DEFAULT_ALIAS

    def describe(self) -> str:
        """In words, for the admin and the command line."""
        if self.kind == PROCESSES:
            return "scheduler's process pool"
        if self.kind == TASKS:
            return f"task workers (backend {self.backend!r}, queue {self.queue!r})"
        return "scheduler's threads"
