"""OpenTelemetry: a span per run, the child of the span of the dispatch that handed it over.

The dispatch's trace context travels with the run as a W3C ``traceparent`` string: through the
thread pool's submission, down the pipe to a child of the process pool, and for task workers in
the frozen call written on the run's row in the INSERT that records it (no column of its own, no
statement more). So a trace shows the scheduler's pass and, under it, each run wherever it ran.

Used when ``opentelemetry-api`` is importable and a tracer provider is set (the API alone, or
no provider, traces nothing: then nothing is done at all).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from scheduling.models import Execution
from scheduling.runs.observers.base import Ending, RunFacts

if TYPE_CHECKING:
    from scheduling.history.rows import Outcome

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # optional: pip install django-scheduling[otel]
    trace = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

TRACER = "scheduling"


def enabled() -> bool:
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def traceparent() -> str | None:
    """The current span's W3C traceparent, or None when nothing is traced here."""
    if not enabled():
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def dispatch_span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A producer span around the hand-over of runs; the runs' spans are its children."""
    span: Any = None
    try:
        if enabled():
            span = trace.get_tracer(TRACER).start_span(
                name, kind=trace.SpanKind.PRODUCER, attributes=attributes
            )
            token = otel_context.attach(trace.set_span_in_context(span))
    # Tracing is best-effort, its look at the provider included: the dispatch goes on untraced.
    except Exception:
        logger.exception("Could not start the span %s", name)
        span = None
    if span is None:
        yield
        return
    try:
        yield
    finally:
        try:
            otel_context.detach(token)
            span.end()
        except Exception:
            logger.exception("Could not end the span %s", name)


class Tracing:
    name = "opentelemetry"

    def enabled(self) -> bool:
        return enabled()

    def start(self, job_id: str, execution: Execution | None, facts: RunFacts | None) -> Ending:
        parent = None
        if facts is not None and facts.traceparent:
            parent = TraceContextTextMapPropagator().extract({"traceparent": facts.traceparent})
        attributes: dict[str, Any] = {"scheduling.job.id": job_id}
        if execution is not None:
            started = timezone.now()
            attributes.update(
                {
                    "scheduling.execution.id": execution.pk,
                    "scheduling.scheduled_at": execution.scheduled_at.isoformat(),
                    "scheduling.lateness": (started - execution.scheduled_at).total_seconds(),
                    "scheduling.origin": execution.origin,
                    "scheduling.attempt": execution.attempt,
                    "scheduling.runs_in": execution.ran_in,
                }
            )
        span = trace.get_tracer(TRACER).start_span(
            f"scheduling.run {job_id}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
        )
        # Current while the job runs, so spans its code opens (queries, requests) are its children.
        token = otel_context.attach(trace.set_span_in_context(span))

        def end(outcome: Outcome) -> None:
            otel_context.detach(token)
            span.set_attribute("scheduling.outcome", outcome.status)
            if outcome.duration is not None:
                span.set_attribute("scheduling.duration", outcome.duration)
            if outcome.status == Execution.Status.SUCCEEDED:
                span.set_status(trace.StatusCode.OK)
            else:
                span.set_status(trace.StatusCode.ERROR, outcome.exception or outcome.status)
            span.end()

        return end
