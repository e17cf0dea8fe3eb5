"""OpenTelemetry: a span per run, with its job, scheduled time, lateness and outcome, the child of
the scheduler's dispatch span wherever it ran (a thread, a child of the process pool, a task
worker); and monitoring adds no statement to a run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sentry_sdk
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_apscheduler.models import DjangoJob
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from scheduling import context, job
from scheduling.models import Execution, ScheduledJob
from scheduling.runs.call import call_job
from scheduling.runs.observers import RunFacts, otel
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.sentry_ingest import SentryIngest
from tests.support.task_worker import work_off
from tests.support.telemetry import SPANS_FILE, hex_ids, in_memory, reset_global_provider, spans_in
from tests.test_dispatch import declare_due, kinds
from tests.test_fire_ahead import claim_ahead, due_in
from tests.test_tasks import dispatch_due

Status = Execution.Status


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[InMemorySpanExporter]:
    """This process traced into memory, the processes it starts into a file; untraced after."""
    monkeypatch.setenv(SPANS_FILE, str(tmp_path / "spans.jsonl"))
    yield in_memory()
    reset_global_provider()


def dispatch_and_run(spans: InMemorySpanExporter, job_id: str) -> tuple | None:
    """The dispatch's span and the span of the run of ``job_id``, once both have ended."""
    by_name = {span.name: span for span in spans.get_finished_spans()}
    if f"scheduling.run {job_id}" not in by_name:
        return None
    return by_name["scheduling.dispatch"], by_name[f"scheduling.run {job_id}"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runs_in", ["threads", "tasks"])
def test_a_run_here_is_a_span_under_the_dispatch_with_its_job_time_lateness_and_outcome(
    registry: dict, spans: InMemorySpanExporter, pooled: Dispatcher, runs_in: str
) -> None:
    job(interval=30, id="traced", runs_in=runs_in)(jobs.succeed)
    dispatch_due(registry, pooled)
    if runs_in == "tasks":
        work_off()  # the trace context went through the run's row: the task carries only its id
    run = wait_for(lambda: Execution.objects.filter(job_id="traced", status=Status.SUCCEEDED).first())

    dispatch, span = wait_for(lambda: dispatch_and_run(spans, "traced"))
    assert dispatch.kind == SpanKind.PRODUCER
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (
        dispatch.context.trace_id,
        dispatch.context.span_id,
    )
    attributes = dict(span.attributes or {})
    assert attributes["scheduling.job.id"] == "traced"
    assert attributes["scheduling.execution.id"] == run.pk
    assert attributes["scheduling.scheduled_at"] == run.scheduled_at.isoformat()
    assert 0 <= attributes["scheduling.lateness"] < 60
    assert attributes["scheduling.outcome"] == Status.SUCCEEDED
    assert attributes["scheduling.runs_in"] == runs_in
    assert span.status.status_code == StatusCode.OK


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("timeout", [None, 120])
def test_a_run_in_another_process_is_a_span_under_the_dispatch_in_this_one(
    registry: dict, spans: InMemorySpanExporter, pooled: Dispatcher, tmp_path: Path, timeout: int | None
) -> None:
    """The process pool's child, and a task worker's own child for a job with a timeout."""
    runs_in = "processes" if timeout is None else "tasks"
    job(interval=30, id="traced-far", runs_in=runs_in, timeout=timeout)(jobs.fail)
    dispatch_due(registry, pooled)
    if runs_in == "tasks":
        work_off()
    wait_for(lambda: Execution.objects.filter(job_id="traced-far", status=Status.FAILED).exists(), 60)

    dispatch = next(span for span in spans.get_finished_spans() if span.name == "scheduling.dispatch")
    far = wait_for(
        lambda: [s for s in spans_in(tmp_path / "spans.jsonl") if s["name"] == "scheduling.run traced-far"]
    )
    span = far[0]  # written by the child, which this process's exporter never saw
    trace_id, span_id = hex_ids(dispatch)
    assert span["context"]["trace_id"] == trace_id
    assert span["parent_id"] == span_id
    assert span["attributes"]["scheduling.outcome"] == Status.FAILED
    assert span["status"]["status_code"] == "ERROR"
    assert span["status"]["description"] == "ValueError: this job fails on purpose"


@pytest.mark.django_db(transaction=True)
def test_a_run_claimed_ahead_is_a_span_under_the_dispatch_that_claimed_it(
    registry: dict, spans: InMemorySpanExporter, executor: ThreadTarget, tmp_path: Path
) -> None:
    """Held until its time, it goes to the pool from the timer's thread, where no span is current."""
    job(interval=30, id="ahead", args=[str(tmp_path / "starts")])(jobs.note_start)
    store, _ = due_in(registry, 0.3)
    claim_ahead(store, executor, window=2)
    assert Execution.objects.get(job_id="ahead").started_at is None  # claimed, not started

    dispatch, span = wait_for(lambda: dispatch_and_run(spans, "ahead"))
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (
        dispatch.context.trace_id,
        dispatch.context.span_id,
    )


# The hot path


@pytest.fixture
def everything_on(spans: InMemorySpanExporter) -> Iterator[None]:
    ingest = SentryIngest()
    sentry_sdk.init(dsn=ingest.dsn(), default_integrations=False, auto_enabling_integrations=False)
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    ingest.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("everything_on")
def test_with_sentry_and_tracing_on_a_lone_run_costs_the_same_statements(
    registry: dict, executor: ThreadTarget
) -> None:
    store = declare_due(registry, 1)
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = datetime.now(UTC)
    with CaptureQueriesContext(connection) as queries:
        due, _ = store.get_due_jobs_and_next_run_time(now, limit=1000)
        dispatcher.dispatch(due, now)
    assert kinds(queries) == {"SELECT": 1, "INSERT": 1, "UPDATE": 1}, queries.captured_queries
    assert executor.wait(10)
    assert Execution.objects.get().status == Status.SUCCEEDED


@pytest.mark.django_db
@pytest.mark.usefixtures("everything_on")
def test_the_observers_of_a_run_read_nothing_from_the_database(
    django_assert_num_queries: object,
) -> None:
    run = Execution.objects.create(job_id="quiet", scheduled_at=datetime.now(UTC), status=Status.RUNNING)
    token = context.current.set(run)
    try:
        with django_assert_num_queries(0):  # type: ignore[operator]
            outcome = call_job("quiet", jobs.succeed, (), {}, RunFacts(timezone="UTC"))
    finally:
        context.current.reset(token)
    assert outcome.status == Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_tracing_that_fails_to_say_whether_it_is_on_fails_no_dispatch(
    registry: dict, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> bool:
        raise RuntimeError("a broken tracer provider")

    monkeypatch.setattr(otel, "enabled", broken)
    job(interval=30, id="traced")(jobs.succeed)
    dispatch_due(registry, dispatcher)
    wait_for(lambda: Execution.objects.filter(job_id="traced", status="succeeded").exists())


@pytest.mark.django_db(transaction=True)
def test_with_no_observer_configured_a_dispatch_looks_once_for_all_its_runs(
    registry: dict, executor: ThreadTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenTelemetry reads the environment for its provider: ≈ 9 µs, twice a run, when each run
    # looked for itself.
    looks: list[bool] = []
    real = otel.enabled

    def looked() -> bool:
        looks.append(real())
        return looks[-1]

    monkeypatch.setattr(otel, "enabled", looked)

    def looks_to_dispatch(count: int) -> int:
        Execution.objects.all().delete()
        ScheduledJob.objects.all().delete()
        DjangoJob.objects.all().delete()
        registry.clear()
        store = declare_due(registry, count)
        looks.clear()
        now = datetime.now(UTC)
        Dispatcher(store, executor.recorder, run_targets(executor)).dispatch(
            store.get_due_jobs_and_next_run_time(now, 1000)[0], now
        )
        assert executor.wait(10)
        assert Execution.objects.filter(status=Status.SUCCEEDED).count() == count
        return len(looks)

    assert looks_to_dispatch(20) == looks_to_dispatch(1)
    assert not any(looks)
