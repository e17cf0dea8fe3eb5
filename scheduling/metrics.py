"""Prometheus metrics, computed from the database at each scrape (needs ``prometheus-client``).

Nothing is counted in the processes that run jobs: every figure is read from the history, the job
store and the schedulers' rows when Prometheus asks, in a constant number of queries. So any
process — a web worker, ``runscheduler``'s own port, a standby — gives the same answer however
many schedulers, pool children and task workers there are, and a fire costs no statement more.
Why gauges over a sliding window rather than counters: see docs/design.md, "Decisions and why".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, DurationField, ExpressionWrapper, F, OuterRef, Q, Subquery, Sum
from django.utils import timezone
from django_apscheduler.models import DjangoJob
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from scheduling.conf import settings
from scheduling.models import UNFINISHED, AlertDelivery, Execution
from scheduling.queries import SchedulerStatus, scheduler_status
from scheduling.store import broken_job

logger = logging.getLogger(__name__)

# Upper bounds in seconds; +Inf is added. Runs last from milliseconds to hours; a fire is
# dispatched within milliseconds when all is well and seconds late when something is wrong.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
QUERIES = 8
"""Queries per scrape, whatever the number of jobs and runs (asserted in the tests)."""


class DatabaseCollector(Collector):
    """Every metric family, read from the database when collected."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from scheduler_families(scheduler_status())
        yield from job_families(now)
        yield from window_families(now - settings.METRICS_WINDOW)
        yield unfinished_family()
        yield alert_deliveries_family(now - settings.METRICS_WINDOW)


class _ClosingConnections(Collector):
    """Closes this thread's database connections after each scrape.

    ``runscheduler``'s metrics server answers each scrape in a new thread, where Django opens a
    connection nobody would close: no request ends there to close it.
    """

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.collector.collect())
        finally:
            connections.close_all()


def scheduler_families(status: SchedulerStatus) -> Iterator[Metric]:
    schedulers = GaugeMetricFamily(
        "scheduling_schedulers",
        "Live schedulers (beating within SCHEDULING_HEARTBEAT_TIMEOUT), by role: the leader holds "
        "the lease and schedules, standbys wait to take over.",
        labels=["role"],
    )
    schedulers.add_metric(["leader"], 1 if status.alive else 0)
    schedulers.add_metric(["standby"], status.standbys)
    yield schedulers
    yield GaugeMetricFamily(
        "scheduling_maintenance",
        "1 while a maintenance pause is in force (fires are recorded skipped), else 0.",
        value=0 if status.maintenance is None else 1,
    )
    jobs = GaugeMetricFamily("scheduling_jobs", "Jobs in the store, by state.", labels=["state"])
    jobs.add_metric(["scheduled"], status.scheduled)
    jobs.add_metric(["paused"], status.paused)
    jobs.add_metric(["broken"], status.broken)
    yield jobs


def job_families(now: datetime) -> Iterator[Metric]:
    """One query: each stored job with its next fire, its latest ended run and its last success."""
    latest = Execution.objects.filter(job_id=OuterRef("id")).order_by("-scheduled_at", "-attempt")
    ended = latest.exclude(status__in=UNFINISHED)
    succeeded = latest.filter(status=Execution.Status.SUCCEEDED)
    rows = (
        DjangoJob.objects.annotate(
            broken=broken_job(),
            last_status=Subquery(ended.values("status")[:1]),
            last_fire=Subquery(ended.values("scheduled_at")[:1]),
            last_success=Subquery(succeeded.values("finished_at")[:1]),
        )
        .order_by("id")
        .values_list("id", "next_run_time", "broken", "last_status", "last_fire", "last_success")
    )
    delay = GaugeMetricFamily(
        "scheduling_job_next_fire_delay_seconds",
        "Seconds until the job's next fire; negative when it is overdue. Scheduled jobs only "
        "(not paused or broken ones).",
        labels=["job_id"],
    )
    last_run = GaugeMetricFamily(
        "scheduling_job_last_run_timestamp_seconds",
        "Fire time of the job's latest run that has ended (any origin), labelled with how it ended.",
        labels=["job_id", "status"],
    )
    last_success = GaugeMetricFamily(
        "scheduling_job_last_success_timestamp_seconds",
        "When the job's latest successful run finished, among the runs the history keeps.",
        labels=["job_id"],
    )
    for job_id, next_run_time, broken, last_status, last_fire, succeeded_at in rows:
        if next_run_time is not None and not broken:
            delay.add_metric([job_id], (next_run_time - now).total_seconds())
        if last_status is not None:
            last_run.add_metric([job_id, last_status], last_fire.timestamp())
        if succeeded_at is not None:
            last_success.add_metric([job_id], succeeded_at.timestamp())
    yield from (delay, last_run, last_success)


def window_families(since: datetime) -> Iterator[Metric]:
    """One query: the runs fired since ``since``, grouped by job, status and placement."""
    window = settings.METRICS_WINDOW.total_seconds()
    yield GaugeMetricFamily(
        "scheduling_window_seconds",
        "Length of the sliding window of the scheduling_window_* metrics (SCHEDULING_METRICS_WINDOW).",
        value=window,
    )
    runs: dict[tuple[str, str], int] = defaultdict(int)
    durations = _Histograms(DURATION_BUCKETS)
    lateness = _Histograms(LATENESS_BUCKETS)
    for row in _window_rows(since):
        runs[row["job_id"], row["status"]] += row["runs"]
        durations.add(row["job_id"], row, "d", row["timed"], row["duration_sum"] or 0.0)
        late_sum = row["late_sum"].total_seconds() if row["late_sum"] is not None else 0.0
        lateness.add(row["ran_in"], row, "l", row["punctual"], late_sum)
    runs_family = GaugeMetricFamily(
        "scheduling_window_runs",
        "Runs whose fire time is within the window, by job and status (how they ended, or where "
        "they are: queued, enqueued, running, overrunning).",
        labels=["job_id", "status"],
    )
    for (job_id, status), count in sorted(runs.items()):
        runs_family.add_metric([job_id, status], count)
    yield runs_family
    yield durations.family(
        "scheduling_window_run_duration_seconds",
        "Duration of the runs in the window that ran to an end (their code's own time), by job.",
        "job_id",
    )
    yield lateness.family(
        "scheduling_window_run_lateness_seconds",
        "Seconds from fire time to start of the scheduled first attempts in the window (not retries, "
        "queued fires or manual runs), by where they ran; for task workers it includes the wait "
        "for a worker.",
        "runs_in",
    )


def unfinished_family() -> Metric:
    family = GaugeMetricFamily(
        "scheduling_unfinished_runs",
        "Runs not ended yet, whatever their fire time, by status.",
        labels=["status"],
    )
    rows = Execution.objects.unfinished().order_by().values("status").annotate(n=Count("id"))
    counts = {row["status"]: row["n"] for row in rows}
    for status in UNFINISHED:
        family.add_metric([status], counts.get(status, 0))
    return family


def alert_deliveries_family(since: datetime) -> Metric:
    family = GaugeMetricFamily(
        "scheduling_window_alert_deliveries",
        "Deliveries of the alerts raised in the window, by status (pending, sent, failed, suppressed).",
        labels=["status"],
    )
    rows = (
        AlertDelivery.objects.filter(alert__raised_at__gte=since)
        .order_by()
        .values("status")
        .annotate(n=Count("id"))
    )
    counts = {row["status"]: row["n"] for row in rows}
    for status in AlertDelivery.Status:
        family.add_metric([status.value], counts.get(status, 0))
    return family


def _window_rows(since: datetime) -> Iterable[Any]:
    # Lateness of a scheduled first attempt only: retries, queued fires and manual runs are late
    # (or early) by design, and would hide the dispatcher's own punctuality.
    punctual = Q(origin=Execution.Origin.SCHEDULE, attempt=1, queued=False, started_at__isnull=False)
    timed = Q(duration__isnull=False)
    aggregates: dict[str, Any] = {
        "runs": Count("id"),
        "timed": Count("id", filter=timed),
        "duration_sum": Sum("duration", filter=timed),
        "punctual": Count("id", filter=punctual),
        "late_sum": Sum("lateness", filter=punctual),
    }
    for index, bound in enumerate(DURATION_BUCKETS):
        aggregates[f"d{index}"] = Count("id", filter=Q(duration__lte=bound))
    for index, bound in enumerate(LATENESS_BUCKETS):
        aggregates[f"l{index}"] = Count("id", filter=punctual & Q(lateness__lte=timedelta(seconds=bound)))
    return (
        Execution.objects.filter(scheduled_at__gte=since)
        .alias(lateness=ExpressionWrapper(F("started_at") - F("scheduled_at"), output_field=DurationField()))
        .order_by()
        .values("job_id", "status", "ran_in")
        .annotate(**aggregates)
    )


class _Histograms:
    """Gauge histograms by one label, summed from the window query's rows (cumulative counts)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(bounds))
        self.counts: dict[str, int] = defaultdict(int)
        self.sums: dict[str, float] = defaultdict(float)

    def add(self, key: str, row: dict[str, Any], prefix: str, count: int, total: float) -> None:
        if not count:
            return
        buckets = self.buckets[key]
        for index in range(len(self.bounds)):
            buckets[index] += row[f"{prefix}{index}"]
        self.counts[key] += count
        self.sums[key] += total

    def family(self, name: str, documentation: str, label: str) -> Metric:
        family = GaugeHistogramMetricFamily(name, documentation, labels=[label])
        for key in sorted(self.counts):
            counts = zip(self.bounds, self.buckets[key], strict=True)
            bounds = [(floatToGoString(bound), float(n)) for bound, n in counts]
            family.add_metric([key], [*bounds, ("+Inf", float(self.counts[key]))], self.sums[key])
        return family


def registry() -> CollectorRegistry:
    """A registry holding only our collector (not the process's default one: a web worker's own
    Python metrics would differ from worker to worker)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(DatabaseCollector())
    return found


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics in the format ``accept`` asks for (Prometheus text, or OpenMetrics), and its
    content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry()), content_type


def serve(port: int, address: str) -> tuple[int, Callable[[], None]]:
    """Serve the metrics over HTTP on ``address``:``port`` (0: any free port) in a thread of this
    process; returns the port and a function that stops the server."""
    served = CollectorRegistry(auto_describe=False)
    served.register(_ClosingConnections(DatabaseCollector()))
    server, thread = start_http_server(port, addr=address, registry=served)
    bound = server.server_port
    logger.info("Prometheus metrics on http://%s:%d/metrics", address, bound)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return bound, stop
