"""The two systems under test, behind one small interface, inside a benchmark worker process.

``Ours`` is our ``Runner`` with the jobs of bench/declared.py. ``Stock`` is django-apscheduler's
README pattern: a ``BackgroundScheduler`` with ``DjangoJobStore`` as its default store, one
``add_job(..., max_instances=1, replace_existing=True)`` per job, then ``start()``; its store's
listeners record history in ``DjangoJobExecution``.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.executors import pool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.conf import settings
from django.db.models import Count, QuerySet
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJobExecution

from bench.jobs import stock_fire, tick
from scheduling.models import Execution
from scheduling.runtime.service import Runner

# Misfire grace times each system gives a job by default (ours: @job's 60 s; stock: APScheduler's 1 s).
GRACE = {"ours": 60, "stock": 1}


class System(Protocol):
    name: str

    def start(self, count: int, schedule: str) -> None: ...
    def stop(self) -> None: ...
    def nudge(self) -> None: ...
    def alive(self) -> bool: ...
    def outcomes(self, since: datetime, until: datetime) -> collections.Counter[str]: ...
    def finished(self) -> list[float]: ...


class Ours:
    name = "ours"

    def start(self, count: int, schedule: str) -> None:
        # The jobs are declared at Django set-up from BENCH_JOBS/BENCH_SCHEDULE (bench/declared.py).
        self.runner = Runner(own_process=True)  # as runscheduler runs it
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop(timeout=10)

    def nudge(self) -> None:
        """Nothing to do: the loop polls the store's earliest next run time."""

    def alive(self) -> bool:
        return self.runner.active and self.runner.scheduler._thread.is_alive()

    def outcomes(self, since: datetime, until: datetime) -> collections.Counter[str]:
        rows = Execution.objects.filter(scheduled_at__gte=since, scheduled_at__lt=until)
        return _count(rows, {"succeeded": "ran", "missed": "missed"})

    def finished(self) -> list[float]:
        rows = Execution.objects.filter(status="succeeded").values_list("finished_at", flat=True)
        return [moment.timestamp() for moment in rows if moment is not None]


class Stock:
    name = "stock"

    def start(self, count: int, schedule: str) -> None:
        _note_fires()
        self.scheduler = BackgroundScheduler(timezone=settings.TIME_ZONE)
        self.scheduler.add_jobstore(DjangoJobStore(), "default")
        for number in range(count):
            job_id = f"bench.{number}"
            trigger = CronTrigger(second="*/1") if schedule == "second" else IntervalTrigger(hours=1)
            self.scheduler.add_job(
                tick, trigger=trigger, id=job_id, args=[job_id], max_instances=1, replace_existing=True
            )
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)

    def nudge(self) -> None:
        """What add_job would do: jobs written to the store behind its back go unseen otherwise."""
        self.scheduler.wakeup()

    def alive(self) -> bool:
        return self.scheduler.running and self.scheduler._thread.is_alive()

    def outcomes(self, since: datetime, until: datetime) -> collections.Counter[str]:
        rows = DjangoJobExecution.objects.filter(run_time__gte=since, run_time__lt=until)
        names = {DjangoJobExecution.SUCCESS: "ran", DjangoJobExecution.MISSED: "missed"}
        return _count(rows, names)

    def finished(self) -> list[float]:
        rows = DjangoJobExecution.objects.filter(status=DjangoJobExecution.SUCCESS)
        return [float(moment) for moment in rows.values_list("finished", flat=True) if moment]


def _count(rows: QuerySet[Any], names: dict[str, str]) -> collections.Counter[str]:
    """Rows by status, counted by the database: the bench polls this while the scheduler works,
    and fetching 10,000 rows every half second took CPU from the system it measures."""
    counts: collections.Counter[str] = collections.Counter()
    for status, n in rows.order_by().values_list("status").annotate(n=Count("pk")):
        counts[names.get(status, status)] += n
    return counts


def _note_fires() -> None:
    """Tell stock runs which fire they serve: APScheduler passes it to run_job, not to the job."""
    original = pool.run_job

    def run_job(job: Any, alias: str, run_times: list[datetime], logger_name: str) -> Any:
        stock_fire.scheduled = run_times[-1].astimezone(UTC).timestamp()
        return original(job, alias, run_times, logger_name)

    pool.run_job = run_job


SYSTEMS: dict[str, type[Ours] | type[Stock]] = {"ours": Ours, "stock": Stock}
