"""OpenTelemetry in tests: the span exporter of this process, and the one of the processes a test
starts (each span a JSON line in the file named by SCHEDULING_TEST_OTEL_SPANS)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

SPANS_FILE = "SCHEDULING_TEST_OTEL_SPANS"


def reset_global_provider() -> None:
    """Forget the global tracer provider, which the API lets a process set only once: what
    opentelemetry-test-utils' ``reset_trace_globals`` does, so other tests run untraced."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def in_memory() -> InMemorySpanExporter:
    """Trace this process into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reset_global_provider()
    trace.set_tracer_provider(provider)
    return exporter


def to_file_if_asked() -> None:
    """Trace this process (a child a test started) into the file the test named, if it did."""
    path = os.environ.get(SPANS_FILE)
    if not path:
        return
    out = open(path, "a", buffering=1)  # noqa: SIM115 -- open for the life of the process
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def spans_in(path: Path) -> list[dict[str, Any]]:
    """The spans the processes wrote to ``path``, as ReadableSpan.to_json() gives them."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of a span, as the JSON of to_json() writes them."""
    context = span.get_span_context()
    assert context is not None
    return f"0x{context.trace_id:032x}", f"0x{context.span_id:016x}"
