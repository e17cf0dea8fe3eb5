from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template

from scheduling.queries import scheduler_status
from scheduling.schedules import format_local, relative

register = template.Library()


@register.inclusion_tag("admin/scheduling/status.html", takes_context=True)
def scheduler_status_panel(context: template.Context) -> dict[str, Any]:
    # The maintenance form needs the page's request, CSRF token and permissions.
    return {
        "status": scheduler_status(),
        **{name: context.get(name) for name in ("request", "csrf_token", "perms")},
    }


@register.filter
def local_time(moment: datetime | None) -> str:
    """A moment in the site's time zone, with seconds: 2026-11-23 14:05:00 CET."""
    return format_local(moment)


@register.filter
def relative_time(moment: datetime | None) -> str:
    """How far a moment is from now: "in 12 s", "4 minutes ago"."""
    return relative(moment) if moment else "-"
