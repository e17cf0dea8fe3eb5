"""Execution history and scheduler heartbeats: read-only."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from scheduling import control
from scheduling.admin.paging import EstimatingPaginator
from scheduling.models import UNFINISHED, Execution, Job, ScheduledJob, SchedulerInstance
from scheduling.schedules import format_local

STATUS_COLOURS: dict[str, str] = {
    Execution.Status.QUEUED: "#1b7c83",
    Execution.Status.ENQUEUED: "#8250df",
    Execution.Status.RUNNING: "#1f6feb",
    Execution.Status.OVERRUNNING: "#bf8700",
    Execution.Status.SUCCEEDED: "#1a7f37",
    Execution.Status.FAILED: "#cf222e",
    Execution.Status.TIMED_OUT: "#a40e26",
    Execution.Status.CANCELLED: "#57606a",
    Execution.Status.MISSED: "#9a6700",
    Execution.Status.SKIPPED: "#6e7781",
    Execution.Status.INTERRUPTED: "#bc4c00",
}


def status_badge(status: str, label: str) -> SafeString:
    return format_html(
        '<span class="scheduling-status" style="color:{};font-weight:bold">{}</span>',
        STATUS_COLOURS.get(status, "inherit"),
        label,
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobFilter(admin.SimpleListFilter):
    """Jobs to filter by, from the jobs table (a DISTINCT over the history would be slow).

    A site of more than ``LISTED`` jobs gets no list of them all (100,000 links in the sidebar),
    only the job chosen: a job's page links to its runs, and the search box finds a job by id.
    """

    title = _("job")
    parameter_name = "job"
    LISTED = 100

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        listed = list(ScheduledJob.objects.only("id", "name")[: self.LISTED + 1])
        if len(listed) > self.LISTED:
            value = self.value()
            return [(value, value)] if value else []
        return [(scheduled_job.id, scheduled_job.name or scheduled_job.id) for scheduled_job in listed]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Execution]) -> QuerySet[Execution]:
        return queryset.filter(job_id=self.value()) if self.value() else queryset


def cancel_context(request: HttpRequest) -> dict[str, Any]:
    """What a page with Cancel buttons needs: may the user cancel, and which states can be."""
    return {
        "can_cancel": request.user.has_perm("scheduling.cancel_run"),
        "unfinished": [status.value for status in UNFINISHED],
    }


def cancel_run(request: HttpRequest, run_id: int) -> None:
    """Cancel a run for the admin user of ``request``, audited on its job, with a message."""
    try:
        run = control.cancel(run_id, request.user.get_username())
    except (control.UnknownRunError, control.RunEndedError) as exc:
        messages.error(request, str(exc))
        return
    if (job := Job.objects.filter(pk=run.job_id).first()) is not None:
        LogEntry.objects.log_actions(
            cast(int, request.user.pk),
            [job],
            CHANGE,
            change_message=f"Asked to cancel run {run.pk}",
            single_object=True,
        )
    if run.status == Execution.Status.CANCELLED and run.started_at is None:
        messages.success(request, _("Run %(run)s was cancelled before it started.") % {"run": run.pk})
    elif run.status == Execution.Status.CANCELLED:  # cancelled again: a cancel stopped it already
        messages.success(request, _("Run %(run)s was cancelled.") % {"run": run.pk})
    else:
        messages.success(
            request,
            _("Asked to cancel run %(run)s of %(job)s: it is stopped within a few seconds.")
            % {"run": run.pk, "job": run.job_id},
        )


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
    list_display = [
        "job_id",
        "coloured_status",
        "attempt_of",
        "scheduled",
        "started",
        "run_time",
        "started_by",
        "where",
    ]
    list_filter = ["status", JobFilter, "origin", "ran_in", "scheduled_at"]
    search_fields = ["job_id", "exception", "task_id"]
    show_full_result_count = False
    paginator = EstimatingPaginator
    change_form_template = "admin/scheduling/execution/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "job_id",
                    "coloured_status",
                    "attempt_of",
                    "started_by",
                    "arguments",
                    "cancelled_by",
                ]
            },
        ),
        (_("Where it ran"), {"fields": ["ran_in", "hostname", "pid", "task_id", "instance"]}),
        (_("Timing"), {"fields": ["scheduled", "started", "finished", "run_time"]}),
        (_("Error"), {"fields": ["exception", "full_traceback"]}),
        (_("Output"), {"fields": ["captured_output"]}),
        (_("After it was recorded interrupted"), {"fields": ["late"]}),
    ]
    readonly_fields = [
        "arguments",
        "attempt_of",
        "cancelled_by",
        "late",
        "coloured_status",
        "started_by",
        "scheduled",
        "started",
        "finished",
        "run_time",
        "full_traceback",
        "captured_output",
    ]

    def get_urls(self) -> list[URLPattern]:
        cancel = path(
            "<int:object_id>/cancel/",
            self.admin_site.admin_view(require_POST(self.cancel_view)),
            name="scheduling_execution_cancel",
        )
        return [cancel, *super().get_urls()]

    def cancel_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not request.user.has_perm("scheduling.cancel_run"):
            raise PermissionDenied
        cancel_run(request, object_id)
        # The job's page has a Cancel button beside each of its runs still going: back to it.
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:scheduling_execution_change", args=[object_id])
        return HttpResponseRedirect(back)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **cancel_context(request)}
        )

    @admin.display(description=_("cancel requested"))
    def cancelled_by(self, obj: Execution) -> str:
        if obj.cancel_requested_at is None:
            return "-"
        return str(
            _("by %(user)s at %(time)s")
            % {
                "user": obj.cancel_requested_by or _("a script"),
                "time": format_local(obj.cancel_requested_at),
            }
        )

    @admin.display(description=_("arguments"))
    def arguments(self, obj: Execution) -> SafeString | str:
        """The arguments of a run requested with its own; the job's are on the job's page."""
        if obj.args is None and obj.kwargs is None:
            return str(_("the job's own"))
        own = str(_("the job's own"))
        return format_html(
            '<code class="scheduling-args">args: {}</code><br>'
            '<code class="scheduling-kwargs">kwargs: {}</code>',
            own if obj.args is None else json.dumps(obj.args),
            own if obj.kwargs is None else json.dumps(obj.kwargs),
        )

    @admin.display(description=_("attempt"), ordering="attempt")
    def attempt_of(self, obj: Execution) -> str:
        """ "attempt 2 of 4", and when the next one starts while it is pending; "-" for a job
        without retries."""
        if obj.attempts <= 1:
            return "-"
        text = str(
            _("attempt %(attempt)s of %(attempts)s") % {"attempt": obj.attempt, "attempts": obj.attempts}
        )
        if obj.retry_at is not None:
            text += str(_(", next attempt at %(time)s") % {"time": format_local(obj.retry_at)})
        return text

    @admin.display(description=_("output"))
    def captured_output(self, obj: Execution) -> SafeString | str:
        if not obj.output:
            return "-"
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', obj.output)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        queryset = super().get_queryset(request)
        # The list leaves each run's output (up to SCHEDULING_OUTPUT_LIMIT) out; its page shows it.
        match = request.resolver_match
        if match is not None and match.url_name == "scheduling_execution_changelist":
            return queryset.defer("output")
        return queryset

    @admin.display(description=_("traceback"))
    def full_traceback(self, obj: Execution) -> SafeString | str:
        if not obj.traceback:
            return "-"
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', obj.traceback)

    @admin.display(description=_("how it ended"))
    def late(self, obj: Execution) -> str:
        """The outcome of a run that went on after it was recorded interrupted (see finish_all)."""
        outcome = obj.late_outcome
        if not outcome:
            return "-"
        ended = str(
            _("%(status)s at %(finished)s")
            % {"status": outcome.get("status"), "finished": outcome.get("finished_at")}
        )
        if outcome.get("duration") is not None:
            ended += f", {outcome['duration']:.3f} s"
        return f"{ended}. {outcome['exception']}" if outcome.get("exception") else ended

    @admin.display(description=_("finished at"), ordering="finished_at")
    def finished(self, obj: Execution) -> str:
        return format_local(obj.finished_at)

    @admin.display(description=_("status"), ordering="status")
    def coloured_status(self, obj: Execution) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("scheduled for"), ordering="scheduled_at")
    def scheduled(self, obj: Execution) -> str:
        return format_local(obj.scheduled_at)

    @admin.display(description=_("started at"), ordering="started_at")
    def started(self, obj: Execution) -> str:
        return format_local(obj.started_at)

    @admin.display(description=_("duration"), ordering="duration")
    def run_time(self, obj: Execution) -> str:
        return "-" if obj.duration is None else f"{obj.duration:.3f} s"

    @admin.display(description=_("ran in"), ordering="ran_in")
    def where(self, obj: Execution) -> str:
        """The kind of runner and its host: "Task worker on web-2"; the host alone is not enough to
        tell a scheduler's own run from a worker's on the same machine."""
        if not obj.hostname:
            return str(obj.get_ran_in_display())
        return str(_("%(runner)s on %(host)s") % {"runner": obj.get_ran_in_display(), "host": obj.hostname})

    @admin.display(description=_("started by"), ordering="origin")
    def started_by(self, obj: Execution) -> str:
        if obj.origin == Execution.Origin.MANUAL:
            return str(_("manual, by %(user)s") % {"user": obj.requested_by or _("a script")})
        return str(obj.get_origin_display())


@admin.register(SchedulerInstance)
class SchedulerInstanceAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "pid", "role", "started_at", "last_beat", "stopped_at", "standby_reason"]
    list_filter = ["role"]
