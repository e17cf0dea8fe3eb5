"""Runs seen by the monitoring a site runs beside the scheduler: Sentry Crons check-ins and
OpenTelemetry spans, sent from whichever process runs the job's code.

One seam: :func:`scheduling.runs.call.call_job` runs every call inside :func:`observed`, in a
thread of the scheduler, a child of the process pool or a task worker alike. Each observer is
used only when its package is importable and configured in that process, looked at for each
dispatch (a run in a task worker: for each run) so that one configured after start-up is used.
An observer is best-effort: what it raises is logged and swallowed, and it never fails a run.
With neither configured a run on the scheduler's threads pays nothing: the dispatch looked once
for all of its runs (the look costs ≈ 9 µs: OpenTelemetry reads the environment for its provider).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from scheduling import context
from scheduling.history.rows import Outcome
from scheduling.models import Execution
from scheduling.runs.observers import otel, sentry
from scheduling.runs.observers.base import Ending, Observer, RunFacts, facts_of

if TYPE_CHECKING:
    from apscheduler.job import Job

__all__ = [
    "RunFacts",
    "dispatching",
    "facts_for",
    "facts_from",
    "flush",
    "observed",
    "observing",
    "trace_context",
]

logger = logging.getLogger(__name__)

OBSERVERS: tuple[Observer, ...] = (sentry.SentryCrons(), otel.Tracing())


def _enabled() -> list[Observer]:
    enabled = []
    for observer in OBSERVERS:
        try:
            if observer.enabled():
                enabled.append(observer)
        # A broken installation of a monitoring package must not fail the run.
        except Exception:
            logger.exception("Observer %s: could not tell whether it is enabled", observer.name)
    return enabled


class Watch:
    """A run being observed: tell it the outcome with :meth:`ended`."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None

    def ended(self, outcome: Outcome) -> None:
        self.outcome = outcome


@contextmanager
def observed(job_id: str, facts: RunFacts | None = None, look: bool = True) -> Iterator[Watch]:
    """Observe the run of ``job_id`` going on in this context (``current_run()`` gives its row).

    ``look=False``: the caller knows no observer is enabled (see :func:`observing`)."""
    watch = Watch()
    observers = _enabled() if look else []
    if not observers:
        yield watch
        return
    execution = context.current.get()
    endings: list[tuple[str, Ending]] = []
    for observer in observers:
        try:
            endings.append((observer.name, observer.start(job_id, execution, facts)))
        # Monitoring is best-effort: the run goes on whatever its observer raised.
        except Exception:
            logger.exception("Observer %s: could not see job %s start", observer.name, job_id)
    try:
        yield watch
    finally:
        # The call never raises (its failure is its outcome); if the capture around it did, the
        # observers still see the run end, so no check-in stays in progress and no span open.
        outcome = watch.outcome or Outcome(
            Execution.Status.FAILED, None, timezone.now(), None, "The run ended in an error of the scheduler"
        )
        # In reverse, as nested context managers end: a span opened first is closed last.
        for name, ending in reversed(endings):
            try:
                ending(outcome)
            except Exception:
                logger.exception("Observer %s: could not see job %s end", name, job_id)


def facts_for(
    job: Job, timeout: int | None, traceparent: str | None = None, observing: bool = True
) -> RunFacts | None:
    """What the observers of a run of ``job`` need; None when none is enabled (``observing``,
    read by the dispatch that handed the run over)."""
    if not observing:
        return None
    return _facts(job.id, job.trigger, job.misfire_grace_time, timeout, traceparent)


def facts_from(
    job_id: str, trigger: Any, misfire_grace_time: int | None, timeout: int | None, traceparent: Any
) -> RunFacts | None:
    """The same, from the parts of a job a task worker has read (``trigger`` None: the job has
    left the store)."""
    if not _enabled():
        return None
    return _facts(job_id, trigger, misfire_grace_time, timeout, traceparent)


def _facts(
    job_id: str, trigger: Any, misfire_grace_time: int | None, timeout: int | None, traceparent: Any
) -> RunFacts:
    traceparent = traceparent if isinstance(traceparent, str) else None
    try:
        return facts_of(trigger, misfire_grace_time, timeout, traceparent)
    # A trigger of a kind nobody can describe leaves the observers with less to say, no more.
    except Exception:
        logger.exception("Job %s: could not describe its schedule to monitors", job_id)
        return RunFacts(traceparent=traceparent)


def trace_context() -> str | None:
    """The W3C traceparent of the span current here (the dispatch), to carry with a run."""
    traceparent = getattr(_dispatch, "traceparent", _UNREAD)
    return _read_trace_context() if traceparent is _UNREAD else traceparent  # type: ignore[return-value]


def observing() -> bool:
    """Whether an observer is enabled here: as the dispatch going on in this thread read it once
    for all its runs (see :func:`dispatching`), else looked at now."""
    enabled = getattr(_dispatch, "observing", None)
    return bool(_enabled()) if enabled is None else bool(enabled)


def _read_trace_context() -> str | None:
    try:
        return otel.traceparent()
    except Exception:
        logger.exception("Could not read the trace context of the dispatch")
        return None


@contextmanager
def dispatching(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A span around a hand-over of runs (a dispatch pass, a run requested), when tracing is on.

    Its trace context, and whether any observer is enabled, are read once, at its start, for
    every run it hands over: looking at the tracer provider for each of 10,000 runs was an eighth
    of the dispatch's time."""
    span: AbstractContextManager[object]
    try:
        span = otel.dispatch_span(name, attributes)
    except Exception:
        logger.exception("Could not start the span of %s", name)
        span = nullcontext()
    with span:
        outer = getattr(_dispatch, "traceparent", _UNREAD), getattr(_dispatch, "observing", None)
        _dispatch.traceparent, _dispatch.observing = _read_trace_context(), bool(_enabled())
        try:
            yield
        finally:
            _dispatch.traceparent, _dispatch.observing = outer


_dispatch = threading.local()  # the trace context and observers of the dispatch going on in this thread
_UNREAD = object()


def flush(timeout: float = 2.0) -> None:
    """Send what the observers hold (a child process is about to end)."""
    try:
        sentry.flush(timeout)
    except Exception:
        logger.exception("Could not flush Sentry's check-ins")
