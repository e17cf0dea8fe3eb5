"""A small server-side SVG chart of a job's recent run durations, coloured by outcome."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from scheduling.admin.history import STATUS_COLOURS
from scheduling.models import Execution
from scheduling.schedules import format_local

WIDTH, HEIGHT, GAP = 600, 80, 2


def duration_chart(executions: Sequence[Execution]) -> SafeString:
    """Bars oldest to newest; height is the run's duration relative to the longest shown."""
    runs = [execution for execution in reversed(executions) if execution.duration is not None]
    if not runs:
        return format_html("{}", "-")
    longest = max(run.duration or 0 for run in runs) or 1.0
    bar = WIDTH / len(runs)
    bars = format_html_join(
        "",
        # format_html escapes its arguments into strings, so numbers are formatted beforehand.
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} in {} s</title></rect>',
        (
            (
                f"{index * bar:.1f}",
                f"{HEIGHT - height:.1f}",
                f"{max(bar - GAP, 1):.1f}",
                f"{height:.1f}",
                STATUS_COLOURS.get(run.status, "#6e7781"),
                format_local(run.scheduled_at),
                run.get_status_display(),
                f"{run.duration:.3f}",
            )
            for index, run in enumerate(runs)
            for height in [max((run.duration or 0) / longest * HEIGHT, 1)]
        ),
    )
    figures = {"count": len(runs), "seconds": number_format(longest, 3)}
    return format_html(
        '<svg class="scheduling-durations" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}">{}</svg><br><small>{}</small>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        _("Durations of the last %(count)d runs, longest %(seconds)s s") % figures,
        bars,
        _("last %(count)d runs, oldest left; tallest bar %(seconds)s s") % figures,
    )
