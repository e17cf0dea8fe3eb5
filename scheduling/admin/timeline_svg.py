"""The timeline drawn as one SVG: an axis on the site's local clock, a row per job, a mark per run.

Per-request constants (status labels, URL prefixes) are computed once: at 10,000 marks, whatever
is done per mark is what the page costs. A mark is an ``<a>`` around a ``<rect>`` with a class for
its colour (a ``<style>`` block maps classes to colours) and a ``<title>`` read on hover.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from scheduling.admin.timeline import NOT_RUN, SEVERITY, Column, Row, Run, Status, Timeline, colour, worst
from scheduling.schedules import format_local

LABEL_WIDTH, ROW_HEIGHT, AXIS_HEIGHT = 220, 20, 22
MARK_WIDTH = 2
LABEL_CHARACTERS = 32
# The admin's own colour variables where they exist, so the light and dark themes both read.
STYLE = (
    ".t-grid{stroke:var(--hairline-color,#d0d7de)}.t-band{fill:var(--darkened-bg,#f6f8fa)}"
    ".t-label{font:12px sans-serif;fill:var(--body-fg,#1f2328)}"
    ".t-tick{font:11px sans-serif;fill:var(--body-quiet-color,#57606a)}.t-end{text-anchor:end}"
    ".t-gone{fill:var(--body-quiet-color,#57606a);font-style:italic}"
    "a:hover rect{stroke:var(--body-fg,#1f2328);stroke-width:1}"
)
# The start of a mark's <rect>, by status, up to its x: short for fires that did not run.
RECTS = {
    status: f'<rect class="t-{status}" y="{10 if status in NOT_RUN else 3}" width="{MARK_WIDTH}" '
    f'height="{8 if status in NOT_RUN else 14}" x="'
    for status in SEVERITY
}
TICK = '<line class="t-grid" x1="{}" y1="{}" x2="{}" y2="{}"/><text class="{}" x="{}" y="14">{}</text>'
TICK_LABEL_WIDTH = 60  # room a tick's label needs on its right; nearer the end it goes on the left


class Drawing:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.labels = {status: str(Status(status).label) for status in SEVERITY}
        self.run_url = reverse("admin:scheduling_execution_changelist")
        self.job_url = reverse("admin:scheduling_job_changelist")
        self.zone = timezone.get_current_timezone()

    def svg(self) -> SafeString:
        rows = self.timeline.rows
        width = LABEL_WIDTH + self.timeline.width
        height = AXIS_HEIGHT + ROW_HEIGHT * max(len(rows), 1)
        colours = "".join(f".t-{status}{{fill:{colour(status)}}}" for status in SEVERITY)
        return format_html(
            # As wide as the page allows, at most its own size: narrower, it scales down whole
            # rather than hiding the latest runs behind a scroll bar.
            '<svg class="scheduling-timeline" xmlns="http://www.w3.org/2000/svg" '
            'style="width:100%;max-width:{}px;height:auto" viewBox="0 0 {} {}" role="img" '
            'aria-label="{}"><style>{}{}</style>{}{}</svg>',
            width,
            width,
            height,
            _("Runs of each job over the %(window)s") % {"window": self.timeline.window.label},
            colours,
            STYLE,
            self.axis(height),
            format_html_join("", "{}", ((self.row(index, row),) for index, row in enumerate(rows))),
        )

    def axis(self, height: int) -> SafeString:
        """Gridlines on round local times, each labelled, and one where the window starts."""
        window = self.timeline.window
        lines = format_html_join(
            "",
            TICK,
            (
                (x, AXIS_HEIGHT - 4, x, height, *place, dateformat.format(moment, window.tick_format))
                for moment in ticks(self.timeline.start, self.timeline.end, window.tick)
                for x in [LABEL_WIDTH + self.timeline.x(moment)]
                for place in [
                    ("t-tick", x + 3)
                    if x + TICK_LABEL_WIDTH < LABEL_WIDTH + self.timeline.width
                    else ("t-tick t-end", x - 3)
                ]
            ),
        )
        start = '<line class="t-grid" x1="{}" y1="{}" x2="{}" y2="{}"/>{}'
        return format_html(start, LABEL_WIDTH, AXIS_HEIGHT - 4, LABEL_WIDTH, height, lines)

    def row(self, index: int, row: Row) -> SafeString:
        band = format_html(
            '<rect class="t-band" width="{}" height="{}"/>', LABEL_WIDTH + self.timeline.width, ROW_HEIGHT
        )
        # The marks are built as plain strings, not with format_html: at 10,000 marks its escaping of
        # every argument (numbers and our own class names included) was two thirds of the page's
        # time. What comes from the database, each title and a shared mark's link, is escaped in
        # mark(); the rest is integers and the constants above.
        marks = mark_safe("".join([self.mark(row, x, runs) for x, runs in row.marks.items()]))  # noqa: S308
        return format_html(
            '<g class="t-row" data-job="{}" transform="translate(0,{})">{}{}'
            '<g transform="translate({},0)">{}</g></g>',
            row.job_id,
            AXIS_HEIGHT + index * ROW_HEIGHT,
            band if index % 2 else "",
            self.job_label(row),
            LABEL_WIDTH,
            marks,
        )

    def job_label(self, row: Row) -> SafeString:
        label = row.label
        text = label if len(label) <= LABEL_CHARACTERS else label[: LABEL_CHARACTERS - 1] + "…"
        if not row.in_store:
            return format_html(
                '<text class="t-label t-gone" x="4" y="14">{}<title>{}</title></text>',
                text,
                _("%(job)s: no longer in the job store") % {"job": row.job_id},
            )
        return format_html(
            '<a href="{}{}/change/"><text class="t-label" x="4" y="14">{}<title>{}</title></text></a>',
            self.job_url,
            quote(row.job_id),
            text,
            row.job_id,
        )

    def mark(self, row: Row, x: int, runs: Column) -> str:
        """One mark's markup, escaped: see row()."""
        status = runs.first.status if len(runs) == 1 else worst(runs.counts)
        if len(runs) == 1:  # a link made of our URL and an integer: nothing to escape
            href, title = f"{self.run_url}{runs.first.id}/change/", self.run_title(row, runs.first)
        else:
            href, title = html.escape(self.group_link(row, runs)), self.group_title(row, runs)
        # A status this version does not know (written by a newer one) is drawn as skipped is.
        rect = RECTS.get(status, RECTS[Status.SKIPPED])
        return f'<a href="{href}">{rect}{x}"><title>{html.escape(title)}</title></rect></a>'

    def run_title(self, row: Row, run: Run) -> str:
        parts = [
            row.label,
            format_local(run.scheduled_at, self.zone),
            self.labels.get(run.status, run.status),
        ]
        if run.duration is not None:
            parts.append(f"{run.duration:.3f} s")
        if run.message:
            parts.append(next((line for line in run.message.splitlines() if line.strip()), ""))
        return " · ".join(part for part in parts if part)

    def group_title(self, row: Row, runs: Column) -> str:
        counts = runs.counts
        outcomes = ", ".join(
            f"{counts[status]} {self.labels[status].lower()}" for status in SEVERITY if counts[status]
        )
        head = ngettext("%(count)d run", "%(count)d runs", len(runs)) % {"count": len(runs)}
        span = _("%(first)s to %(last)s") % {
            "first": format_local(runs.first.scheduled_at, self.zone),
            "last": format_local(runs.last.scheduled_at, self.zone),
        }
        return f"{row.label} · {span} · {head}: {outcomes}"

    def group_link(self, row: Row, runs: Column) -> str:
        """The history filtered to the runs a shared mark stands for (its job, from first to last)."""
        until = runs.last.scheduled_at + timedelta(microseconds=1)
        query = {
            "job": row.job_id,
            "scheduled_at__gte": runs.first.scheduled_at.isoformat(),
            "scheduled_at__lt": until.isoformat(),
        }
        return f"{self.run_url}?{urlencode(query)}"


def ticks(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    """Round local times between ``start`` and ``end``: every ``step`` from a local midnight.

    Counted on the local wall clock, so gridlines stay on 00:00, 03:00… across a daylight saving
    change (a tick whose wall time the change skips lands an hour off).
    """
    local_start = timezone.localtime(start)
    wall = local_start.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    zone = local_start.tzinfo
    while (moment := wall.replace(tzinfo=zone)) <= end:
        if moment >= start:
            yield moment
        wall += step
