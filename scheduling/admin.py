"""Read-only admin views of jobs, history and schedulers.

django_apscheduler's own admin is unregistered: its "run" action executes jobs inside the web
request, and its history pages show a table this app no longer writes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from scheduling.models import Execution, ScheduledJob, SchedulerInstance
from scheduling.schedules import describe, format_local
from scheduling.store import unpickle

for model in (DjangoJob, DjangoJobExecution):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ScheduledJob)
class ScheduledJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "func_ref", "schedule", "next_run_time", "state"]
    list_filter = ["source"]
    search_fields = ["id", "name", "func_ref"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduledJob]:
        stored = DjangoJob.objects.filter(id=OuterRef("id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                next_run_time=Subquery(stored.values("next_run_time")),
                job_state=Subquery(stored.values("job_state")),
            )
        )

    @admin.display(description=_("schedule"))
    def schedule(self, obj: Any) -> str:
        if obj.job_state is None or obj.import_error:
            return "-"
        return describe(unpickle(obj.job_state)["trigger"])

    @admin.display(description=_("next run"), ordering="next_run_time")
    def next_run_time(self, obj: Any) -> str:
        return format_local(obj.next_run_time)

    @admin.display(description=_("state"))
    def state(self, obj: Any) -> str:
        if obj.import_error:
            return str(_("broken: %(error)s") % {"error": obj.import_error})
        if obj.job_state is None:
            return str(_("not in the store (deleted or finished)"))
        if obj.undeclared_at:
            return str(_("paused: no longer declared in code"))
        state = _("scheduled") if obj.next_run_time else _("paused")
        if obj.overridden_at:
            return str(_("%(state)s, overridden outside the code") % {"state": state})
        return str(state)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
    list_display = ["job_id", "status", "scheduled", "started", "run_time", "origin", "hostname"]
    list_filter = ["status", "origin", "scheduled_at"]
    search_fields = ["job_id", "exception"]
    date_hierarchy = "scheduled_at"
    show_full_result_count = False

    @admin.display(description=_("scheduled for"), ordering="scheduled_at")
    def scheduled(self, obj: Execution) -> str:
        return format_local(obj.scheduled_at)

    @admin.display(description=_("started at"), ordering="started_at")
    def started(self, obj: Execution) -> str:
        return format_local(obj.started_at)

    @admin.display(description=_("duration"), ordering="duration")
    def run_time(self, obj: Execution) -> str:
        return "-" if obj.duration is None else f"{obj.duration:.3f} s"


@admin.register(SchedulerInstance)
class SchedulerInstanceAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "pid", "started_at", "last_beat", "stopped_at"]
