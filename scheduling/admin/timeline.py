"""The timeline's data: every job a row, the last 24 hours or 7 days the axis, each run a mark.

Read in two queries whatever the number of jobs and runs: the jobs, and the runs in the window
(only the columns a mark needs). Runs of a job that fall in the same pixel column share one mark,
coloured by the worst outcome among them and linked to the history filtered to them: beyond one
per pixel, more marks would add markup, and render time, but nothing a reader could see or hover.
Drawn by ``timeline_svg``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db.models import OuterRef, Subquery
from django.db.models.functions import Substr
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from scheduling.admin.history import STATUS_COLOURS
from scheduling.models import Execution, Job, ScheduledJob

Status = Execution.Status

PLOT_WIDTH = 900  # pixels of the time axis: 96 s each over 24 hours, 11.2 minutes over 7 days
MESSAGE_HEAD = 100  # characters of a run's message read, shown on hover

# Worst first: a shared mark takes the colour of the worst outcome among its runs.
SEVERITY: tuple[str, ...] = (
    Status.FAILED,
    Status.TIMED_OUT,
    Status.INTERRUPTED,
    Status.MISSED,
    Status.SKIPPED,
    Status.CANCELLED,
    Status.OVERRUNNING,
    Status.RUNNING,
    Status.ENQUEUED,
    Status.QUEUED,
    Status.SUCCEEDED,
)
# Fires that never ran are drawn as short marks, so that they stand out by shape as well as colour.
NOT_RUN = frozenset({Status.MISSED, Status.SKIPPED})


@dataclass(frozen=True)
class Window:
    key: str
    span: timedelta
    label: Promise
    tick: timedelta  # between gridlines, counted on the site's local clock from midnight
    tick_format: str  # a django.utils.dateformat format

    @classmethod
    def of(cls, key: str | None) -> Window:
        """The window named ``key``; the last 24 hours for a missing or unknown one."""
        return WINDOWS.get(key or "", WINDOWS["24h"])


WINDOWS = {
    "24h": Window("24h", timedelta(hours=24), _("last 24 hours"), timedelta(hours=3), "H:i"),
    "7d": Window("7d", timedelta(days=7), _("last 7 days"), timedelta(days=1), "D j M"),
}


class Run(NamedTuple):
    """A run as the query reads it (a tuple: 10,000 of them are made per page)."""

    id: int
    scheduled_at: datetime
    status: str
    duration: float | None
    message: str | None  # its first MESSAGE_HEAD characters
    job_id: str


class Column:
    """The runs of one job in one pixel column, as its mark shows them: the first, the last and
    how many of each outcome. A window of millions of runs so holds a few objects per pixel."""

    __slots__ = ("counts", "first", "last")

    def __init__(self, run: Run) -> None:
        self.first = self.last = run
        self.counts: Counter[str] = Counter({run.status: 1})

    def add(self, run: Run) -> None:
        self.last = run
        self.counts[run.status] += 1

    def __len__(self) -> int:
        return sum(self.counts.values())


@dataclass
class Row:
    job_id: str
    name: str
    in_store: bool
    # The runs by pixel column of the axis, in the order they were scheduled.
    marks: dict[int, Column] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.job_id


@dataclass
class Timeline:
    window: Window
    start: datetime
    end: datetime
    rows: list[Row]
    jobs: list[Row]  # every job in the store, for the filter, whichever rows are shown
    counts: Counter[str]
    width: int = PLOT_WIDTH

    @classmethod
    def load(cls, window: Window, job: str | None = None, now: datetime | None = None) -> Timeline:
        """Two queries: the jobs, and the runs scheduled in the window (of ``job`` only, if given)."""
        end = now or timezone.now()
        start = end - window.span
        jobs = {job_id: Row(job_id, name or "", in_store=True) for job_id, name in _jobs()}
        runs = Execution.objects.filter(scheduled_at__gte=start, scheduled_at__lte=end)
        if job:
            runs = runs.filter(job_id=job)
        # Runs of jobs no longer in the store (a finished one-off job, a deleted one) get rows too.
        rows = dict(jobs) if not job else {job: jobs.get(job) or Row(job, "", in_store=False)}
        timeline = cls(window, start, end, [], _by_label(jobs.values()), Counter())
        columns = runs.order_by("scheduled_at").values_list(
            "id", "scheduled_at", "status", "duration", Substr("exception", 1, MESSAGE_HEAD), "job_id"
        )
        # Streamed, not cached by the queryset: only the columns stay in memory.
        for run in map(Run._make, columns.iterator(chunk_size=2000)):
            row = rows.get(run.job_id) or rows.setdefault(run.job_id, Row(run.job_id, "", in_store=False))
            x = timeline.x(run.scheduled_at)
            if (column := row.marks.get(x)) is None:
                row.marks[x] = Column(run)
            else:
                column.add(run)
            timeline.counts[run.status] += 1
        timeline.rows = _by_label(rows.values())
        return timeline

    def x(self, moment: datetime) -> int:
        """The pixel column of ``moment`` on the axis, kept inside it."""
        column = int((moment - self.start) / self.window.span * self.width)
        return min(max(column, 0), self.width - 1)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list[tuple[str, str, int]]:
        """(status, label, count) of the outcomes in the window, worst first."""
        return [
            (status, str(Status(status).label), self.counts[status])
            for status in SEVERITY
            if self.counts[status]
        ]


def _jobs() -> Any:
    names = ScheduledJob.objects.filter(id=OuterRef("id")).values("name")
    return Job.objects.annotate(name=Subquery(names)).values_list("id", "name")


def _by_label(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: (row.label.lower(), row.job_id))


def worst(statuses: Iterable[str]) -> str:
    present = set(statuses)
    return next((status for status in SEVERITY if status in present), Status.SUCCEEDED)


def colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#6e7781")


def legend() -> list[tuple[str, str, str, bool]]:
    """(status, label, colour, whether it ran) for every status, worst first."""
    return [(status, str(Status(status).label), colour(status), status not in NOT_RUN) for status in SEVERITY]


def window_choices(current: Window) -> list[dict[str, Any]]:
    return [
        {"key": key, "label": window.label, "current": window is current} for key, window in WINDOWS.items()
    ]
