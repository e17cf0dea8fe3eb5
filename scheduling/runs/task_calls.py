"""What a task worker runs for an enqueued run: read from our own tables, never from the task.

A task's payload is whatever the queue holds, and anyone who can write to the broker or the
task table can forge one; so the worker takes from it only the run's id. What to call comes from
the job store as the job stands when the worker takes the run, or, when the job has left the
store (a one-off job does as it fires), from the copy the scheduler froze on the run's row in the
same INSERT that recorded it. Either way, only a function declared with ``@job`` or
``@schedulable`` in this worker's code is called: a store row written by hand, or code deployed
on the scheduler but not yet on the worker, ends the run refused, with the reason on its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from apscheduler.job import Job
from apscheduler.util import ref_to_obj
from django_apscheduler.models import DjangoJob

from scheduling import declarations
from scheduling.models import Execution
from scheduling.runs.call import arguments_of
from scheduling.store import unpickle

logger = logging.getLogger(__name__)


class Refused(Exception):
    """The run names nothing this worker may call; the message says why."""


# The key of the frozen call that holds the dispatch's trace context (scheduling.runs.observers).
TRACEPARENT = "traceparent"


@dataclass(frozen=True)
class Call:
    """A run's function reference, arguments and misfire grace time, and the job's trigger when
    it was read from the store (what monitors are told of its schedule)."""

    func_ref: str
    args: list[Any]
    kwargs: dict[str, Any]
    misfire_grace_time: int | None
    trigger: Any = None

    @classmethod
    def of_state(cls, state: dict[str, Any]) -> Call:
        """From a job's pickled state, or from a frozen copy (which has the same keys)."""
        return cls(
            func_ref=state["func"],
            args=list(state["args"]),
            kwargs=dict(state["kwargs"]),
            misfire_grace_time=state["misfire_grace_time"],
            trigger=state.get("trigger"),
        )


def frozen(job: Job) -> dict[str, Any] | None:
    """The copy of ``job`` recorded with a run handed to task workers (JSON for ``Execution.call``).

    None for a job whose arguments are not JSON (one added outside the code): it must not fail
    the INSERT that records the other runs due with it. Its worker reads the job store.
    """
    copy = {
        "func": job.func_ref,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        "misfire_grace_time": job.misfire_grace_time,
    }
    try:
        json.dumps(copy)
    except (TypeError, ValueError) as exc:
        logger.warning(
            "Job %s: its arguments are not JSON, so its runs have no frozen copy (%s)", job.id, exc
        )
        return None
    return copy


def call_of(execution: Execution) -> tuple[Call, Callable[..., Any]]:
    """What to run for ``execution`` and the function itself.

    :raises Refused: when nothing can be read, or it is not a declared function.
    """
    call = _stored(execution.job_id)
    if call is None:
        if execution.call is None:
            raise Refused(
                f"Refused: job {execution.job_id} is not in the job store and its run has no frozen copy "
                "of what to run (recorded by an earlier version, or its arguments are not JSON); "
                "not running anything"
            )
        call = Call.of_state(execution.call)
    if call.func_ref not in declarations.schedulables:
        raise Refused(
            f"Refused: {call.func_ref} is not a function declared with @job or @schedulable in the code "
            "of this worker; not running it"
        )
    if execution.args is not None or execution.kwargs is not None:
        # A run requested with arguments of its own: recorded on its row, never read from the task.
        args, kwargs = arguments_of(call.args, call.kwargs, execution)
        call = replace(call, args=list(args), kwargs=dict(kwargs))
    # Declared means its module was imported here by autodiscovery, so this import cannot fail.
    return call, ref_to_obj(call.func_ref)


def _stored(job_id: str) -> Call | None:
    state = DjangoJob.objects.filter(id=job_id).values_list("job_state", flat=True).first()
    if state is None:
        return None
    try:
        return Call.of_state(unpickle(state))
    # Unpickling rebuilds the trigger and may fail in many ways (the store flags such jobs broken).
    except Exception as exc:
        raise Refused(f"Refused: job {job_id} cannot be loaded from the job store ({exc!r})") from exc
