from __future__ import annotations

from typing import Any

from django import template

from scheduling.status import scheduler_status

register = template.Library()


@register.inclusion_tag("admin/scheduling/status.html")
def scheduler_status_panel() -> dict[str, Any]:
    return {"status": scheduler_status()}
