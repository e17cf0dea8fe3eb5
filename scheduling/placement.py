"""Where a job runs: the scheduler's threads, its process pool, or a worker of Django's tasks framework.

The choice is stored in the APScheduler job's ``executor`` alias, which django-apscheduler pickles
with the rest of the job, so it travels with the job through the store, the admin and other
processes without a table of its own: ``"default"`` (APScheduler's name for the only executor a
stock setup has, so every job stored before this existed runs in threads), ``"processes"``, or
``"tasks:<backend>:<queue>"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _


class RunsIn(models.TextChoices):
    """Where a job runs, as declarations, forms and the API name it and ``Execution.ran_in`` keeps it."""

    THREADS = "threads", _("Scheduler thread")
    PROCESSES = "processes", _("Scheduler process pool")
    TASKS = "tasks", _("Task worker")


DEFAULT_ALIAS = "default"
DEFAULT_TASK_BACKEND = "default"
DEFAULT_TASK_QUEUE = "default"


class PlacementError(ValueError):
    """A placement that cannot be used; the message says what is wrong."""


# RunsIn.values builds its list at every call, and every declared job asks.
_RUNS_IN = frozenset(RunsIn.values)


@dataclass(frozen=True)
class Placement:
    runs_in: RunsIn = RunsIn.THREADS
    backend: str = ""
    queue: str = ""

    @classmethod
    def of(cls, alias: str) -> Placement:
        """The placement an executor alias stands for; unknown aliases run in threads, as before."""
        if alias == RunsIn.PROCESSES:
            return cls(RunsIn.PROCESSES)
        if alias.startswith(RunsIn.TASKS + ":"):
            _, backend, queue = [*alias.split(":", 2), "", ""][:3]
            return cls(RunsIn.TASKS, backend or DEFAULT_TASK_BACKEND, queue or DEFAULT_TASK_QUEUE)
        return cls(RunsIn.THREADS)

    @classmethod
    def build(cls, runs_in: str, backend: str | None = None, queue: str | None = None) -> Placement:
        """A placement from what a user declared or entered; raises PlacementError if it cannot work."""
        if runs_in not in _RUNS_IN:
            choices = ", ".join(map(repr, RunsIn.values))
            raise PlacementError(f"runs_in must be one of {choices}, not {runs_in!r}")
        if runs_in != RunsIn.TASKS:
            if backend or queue:
                raise PlacementError("task_backend and task_queue apply only to jobs with runs_in='tasks'")
            return cls(RunsIn(runs_in))
        backend, queue = backend or DEFAULT_TASK_BACKEND, queue or DEFAULT_TASK_QUEUE
        for label, value in (("task_backend", backend), ("task_queue", queue)):
            if ":" in value:
                raise PlacementError(f"{label} cannot contain ':' ({value!r})")
        return cls(RunsIn.TASKS, backend, queue)

    @property
    def alias(self) -> str:
        """The APScheduler executor alias the job is stored with (see the module's docstring)."""
        if self.runs_in == RunsIn.TASKS:
            return f"{RunsIn.TASKS}:{self.backend}:{self.queue}"
        return RunsIn.PROCESSES.value if self.runs_in == RunsIn.PROCESSES else DEFAULT_ALIAS

    def describe(self) -> str:
        """In words, for the admin and the command line."""
        if self.runs_in == RunsIn.PROCESSES:
            return "scheduler's process pool"
        if self.runs_in == RunsIn.TASKS:
            return f"task workers (backend {self.backend!r}, queue {self.queue!r})"
        return "scheduler's threads"
