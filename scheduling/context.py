"""Which run a job function is in: ``scheduling.current_run()``.

A job may want to know the fire it serves (to name its output after the scheduled time, to log
the execution id, to tell a manual run from a scheduled one). Kept apart from the executor so
that importing ``scheduling`` loads no models.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduling.models import Execution

current: ContextVar[Execution | None] = ContextVar("scheduling_current_run", default=None)


def current_run() -> Execution | None:
    """The execution being run (``job_id``, ``scheduled_at``, ``origin``, ``pk``…) inside a job
    function, or None outside one. Async jobs see it too."""
    return current.get()
