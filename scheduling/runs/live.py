"""The runs going on in this scheduler, with their deadlines and cancel flags.

A run's timeout and a request to cancel it reach the code running it here: the thread (or the
child process) a run is on is told through its :class:`LiveRun`. Once a tick, :meth:`LiveRuns.check`
marks thread runs past their timeout *overrunning* (a thread cannot be stopped: the run keeps its
max_instances slot until its code returns) and raises the cancel flag of runs someone asked to
cancel — one query, and only while runs are going on, so an idle scheduler pays nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from scheduling.models import Execution

logger = logging.getLogger(__name__)


@dataclass
class LiveRun:
    execution: Execution
    timeout: int | None
    stoppable: bool  # in a child process, stopped at its deadline; in a thread, only flagged
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_by: str = ""
    overrunning: bool = False

    @property
    def deadline(self) -> float | None:
        return self.execution._deadline


class LiveRuns:
    def __init__(self) -> None:
        # No lock: a dict's item set, pop and copy are each one step, safe across threads, and a
        # lock taken twice a run by every job thread was one more place for them to queue up.
        self._runs: dict[int, LiveRun] = {}

    def start(self, execution: Execution, timeout: int | None, stoppable: bool) -> LiveRun:
        """Register a run starting now; its deadline is ``timeout`` seconds from now."""
        live = LiveRun(execution, timeout, stoppable)
        execution._deadline = None if timeout is None else time.monotonic() + timeout
        execution._cancel = live.cancel
        self._runs[execution.pk] = live
        return live

    def end(self, live: LiveRun) -> None:
        self._runs.pop(live.execution.pk, None)

    def check(self, held: Collection[int] = ()) -> dict[int, str]:
        """Mark thread runs past their deadline overrunning; raise the flags of cancelled runs.

        ``held``: runs claimed ahead and not started yet (see scheduling.runs.holding), looked at in
        the same query; returns those of them someone asked to cancel, with who asked."""
        runs = list(self._runs.values())
        if not runs and not held:
            return {}
        now = time.monotonic()
        for live in runs:
            past = live.deadline is not None and now >= live.deadline
            if past and not (live.stoppable or live.overrunning):
                self._mark_overrunning(live)
                live.overrunning = True  # only once written: a failed write is tried at the next tick
        going = [live.execution.pk for live in runs if not live.cancel.is_set()]
        asked = dict(
            Execution.objects.filter(pk__in=[*going, *held], cancel_requested_at__isnull=False).values_list(
                "pk", "cancel_requested_by"
            )
        )
        for live in runs:
            if live.execution.pk in asked:
                live.cancelled_by = asked[live.execution.pk]
                live.cancel.set()
                logger.info(
                    "Run %s of job %s: cancel requested by %s",
                    live.execution.pk,
                    live.execution.job_id,
                    live.cancelled_by or "a script",
                )
        return {pk: by for pk, by in asked.items() if pk in held}

    @staticmethod
    def _mark_overrunning(live: LiveRun) -> None:
        logger.warning(
            "Run %s of job %s is past its timeout of %s s; a run in threads cannot be stopped, so it "
            "goes on, marked overrunning (use runs_in='processes' for a hard limit)",
            live.execution.pk,
            live.execution.job_id,
            live.timeout,
        )
        # Only while the row still says running: an outcome written meanwhile stands.
        Execution.objects.filter(pk=live.execution.pk, status=Execution.Status.RUNNING).update(
            status=Execution.Status.OVERRUNNING
        )
