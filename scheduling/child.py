"""What runs inside a child of the process pool (see scheduling.processes).

A spawned child unpickles references to these functions before Django is set up, so this module
imports nothing from Django or from the app at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduling.history import Outcome
    from scheduling.models import Execution


def set_up_django() -> None:
    """The pool's initializer: a spawned child inherits DJANGO_SETTINGS_MODULE and sys.path only."""
    import django

    django.setup()


def ready() -> None:
    """Nothing: submitted to start a child ahead of its first run."""


def call(
    job_id: str, func_ref: str, args: tuple[Any, ...], kwargs: dict[str, Any], execution: Execution | None
) -> Outcome:
    """Call a job's function here, with fresh connections, and return its outcome."""
    from apscheduler.util import ref_to_obj
    from django.db import close_old_connections

    from scheduling import context, invoke

    close_old_connections()
    token = context.current.set(execution)
    try:
        try:
            function = ref_to_obj(func_ref)
        # A function that cannot be imported fails the run like any other error.
        except BaseException as exc:
            return invoke.call(job_id, _raise, (exc,), {})
        return invoke.call(job_id, function, args, kwargs)
    finally:
        context.current.reset(token)
        close_old_connections()


def _raise(exc: BaseException) -> None:
    raise exc
