"""The jobs admin: what each job is doing, and actions that write intent for the scheduler.

Nothing here runs a job: "Run now" records a request that the running scheduler takes within a
poll; pause, resume and reset write to the job store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Avg,
    Case,
    FloatField,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from scheduling import control, validation
from scheduling.admin.charts import duration_chart
from scheduling.admin.history import cancel_context, status_badge
from scheduling.admin.timeline import Timeline, Window, legend, window_choices
from scheduling.admin.timeline_svg import Drawing
from scheduling.forms import JobAddForm, JobScheduleForm, RunArgumentsForm
from scheduling.history.locks import holders
from scheduling.legacy import old_meaning
from scheduling.models import Alert, AlertDelivery, Execution, Job, Maintenance, ScheduledJob
from scheduling.placement import DEFAULT_ALIAS, Placement, RunsIn
from scheduling.policy import RunPolicy, shown_destination
from scheduling.preview import job_runs
from scheduling.queries import schedule_summary, scheduler_status
from scheduling.schedules import describe, format_local, relative
from scheduling.store import old_executions, unpickle

RECENT = timedelta(hours=24)  # the window for a job's average duration and success rate
RECENT_RUNS_ON_PAGE = 20
RECENT_ALERTS = 10
CHART_RUNS = 50


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("scheduled", _("Scheduled")),
            ("paused", _("Paused")),
            ("broken", _("Broken: function cannot be imported")),
            ("undeclared", _("No longer declared in code")),
            ("overridden", _("Overridden outside the code")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        filters = {
            "scheduled": Q(next_run_time__isnull=False, import_error=""),
            "paused": Q(next_run_time__isnull=True, import_error=""),
            "broken": ~Q(import_error=""),
            "undeclared": Q(undeclared_at__isnull=False),
            "overridden": Q(overridden_at__isnull=False),
        }
        chosen = filters.get(self.value() or "")
        return queryset if chosen is None else queryset.filter(chosen)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["job", "function", "schedule", "next_run", "state", "last_run", "recent_runs"]
    form = JobScheduleForm
    readonly_fields = (
        "job",
        "function",
        "state",
        "problem",
        "lock_holder",
        "recent_alerts",
        "last_run",
        "recent_runs",
        "durations",
        "schedule",
        "preview",
    )
    list_filter = [StateFilter]
    search_fields = ["id"]
    ordering = ["next_run_time", "id"]
    actions = ["run_now", "pause", "resume", "reset_schedule", "delete_selected"]
    change_form_template = "admin/scheduling/job/change_form.html"
    change_list_template = "admin/scheduling/job/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        scheduled_job = ScheduledJob.objects.filter(id=OuterRef("id"))
        runs = Execution.objects.filter(job_id=OuterRef("id"))
        last = runs.order_by("-scheduled_at")
        recent = (
            runs.completed().filter(scheduled_at__gte=timezone.now() - RECENT).order_by().values("job_id")
        )
        succeeded = Case(When(status=Execution.Status.SUCCEEDED, then=Value(1.0)), default=Value(0.0))
        annotations: dict[str, Any] = {
            field: Subquery(scheduled_job.values(field))
            for field in ("name", "source", "overridden_at", "undeclared_at")
        }
        annotations["run_policy"] = Subquery(scheduled_job.values("run_policy"), output_field=JSONField())
        annotations["import_error"] = Coalesce(
            Subquery(scheduled_job.values("import_error")), Value(""), output_field=TextField()
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                **annotations,
                last_status=Subquery(last.values("status")[:1]),
                last_at=Subquery(last.values("scheduled_at")[:1]),
                average_duration=Subquery(recent.annotate(value=Avg("duration")).values("value")),
                success_rate=Subquery(
                    recent.annotate(value=Avg(succeeded, output_field=FloatField())).values("value")
                ),
            )
        )

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Refuse, as for a protected relation, to delete jobs django-apscheduler's history refers to.

        Its rows would go with the job (a cascade the database enforces), and the README promises that
        table is left as it was; our history keeps its own copies either way.
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        old = old_executions([obj.pk for obj in objs])
        refusals = [
            ngettext(
                "%(job)s: %(count)d run in django-apscheduler's history table (DjangoJobExecution), "
                "which deleting the job would delete; delete it there first if you no longer need it",
                "%(job)s: %(count)d runs in django-apscheduler's history table (DjangoJobExecution), "
                "which deleting the job would delete; delete them there first if you no longer need them",
                count,
            )
            % {"job": job_id, "count": count}
            for job_id, count in sorted(old.items())
        ]
        return deleted, counts, perms_needed, [*protected, *refusals]

    # Columns

    @admin.display(description=_("job"), ordering="id")
    def job(self, obj: Any) -> SafeString:
        if obj.name and obj.name != obj.id:
            return format_html("<strong>{}</strong><br><small>{}</small>", obj.name, obj.id)
        return format_html("<strong>{}</strong>", obj.id)

    @admin.display(description=_("function"))
    def function(self, obj: Any) -> SafeString | str:
        state = _job_state(obj)
        placement = Placement.of(state.get("executor", DEFAULT_ALIAS))
        if placement.runs_in == RunsIn.THREADS:
            return str(state.get("func", "-"))
        return format_html(
            "{}<br><small>{}</small>",
            state.get("func", "-"),
            _("runs in %(where)s") % {"where": placement.describe()},
        )

    @admin.display(description=_("schedule"))
    def schedule(self, obj: Any) -> str:
        trigger = _job_state(obj).get("trigger")
        return describe(trigger) if trigger is not None else "-"

    @admin.display(description=_("next run"), ordering="next_run_time")
    def next_run(self, obj: Any) -> SafeString | str:
        if obj.next_run_time is None or obj.import_error:
            return "-"
        return format_html(
            "{}<br><small>{}</small>", format_local(obj.next_run_time), relative(obj.next_run_time)
        )

    @admin.display(description=_("state"))
    def state(self, obj: Any) -> SafeString:
        if obj.import_error:
            return format_html(
                '<span style="color:#cf222e" title="{}">{}</span>',
                obj.import_error,
                _("broken: function cannot be imported"),
            )
        labels = [str(_("scheduled") if obj.next_run_time else _("paused"))]
        if obj.undeclared_at:
            labels.append(str(_("no longer declared in code")))
        if obj.overridden_at:
            labels.append(str(_("overridden outside the code")))
        # No ScheduledJob row (source None): written to the store by something other than this
        # app, such as plain django-apscheduler before our scheduler's first sync.
        if obj.source != ScheduledJob.Source.CODE:
            labels.append(str(_("added outside the code")))
        return format_html("{}", ", ".join(labels))

    @admin.display(description=_("problem"))
    def problem(self, obj: Any) -> str:
        return obj.import_error or "-"

    @admin.display(description=_("lock"))
    def lock_holder(self, obj: Any) -> SafeString | str:
        """The job's lock across jobs and who holds it now (one query, on the job's page only)."""
        name = RunPolicy.from_stored(obj.run_policy).lock
        if name is None:
            return "-"
        holder = holders([name]).get(name)
        if holder is None:
            return format_html("{} <small>({})</small>", name, _("free"))
        run = reverse("admin:scheduling_execution_change", args=[holder.run_id])
        return format_html(
            '{} <small>({} <a href="{}">{}</a>)</small>',
            name,
            _("held by job %(job)s,") % {"job": holder.job_id},
            run,
            _("run %(run)s") % {"run": holder.run_id},
        )

    @admin.display(description=_("alerts"))
    def recent_alerts(self, obj: Any) -> SafeString | str:
        """The job's last alerts, each delivery's fate and every attempt at it (three queries, on the
        job's page only)."""
        alerts = list(
            Alert.objects.filter(job_id=obj.id).prefetch_related("deliveries__attempt_log")[:RECENT_ALERTS]
        )
        if not alerts:
            return str(_("none raised"))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    format_local(alert.raised_at),
                    alert.get_rule_display(),
                    alert.message,
                    format_html_join(
                        "",
                        "<div>{}{}</div>",
                        ((delivery_text(item), attempts_list(item)) for item in alert.deliveries.all()),
                    ),
                )
                for alert in alerts
            ),
        )
        head = format_html(
            "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            _("raised"),
            _("rule"),
            _("message"),
            _("deliveries"),
        )
        return format_html("<table>{}{}</table>", head, rows)

    @admin.display(description=_("last run"), ordering="last_at")
    def last_run(self, obj: Any) -> SafeString | str:
        if obj.last_status is None:
            return "-"
        label = str(Execution.Status(obj.last_status).label)
        return format_html(
            "{}<br><small>{}</small>", status_badge(obj.last_status, label), relative(obj.last_at)
        )

    @admin.display(description=_("last 24 h"))
    def recent_runs(self, obj: Any) -> str:
        if obj.success_rate is None:
            return "-"
        rate = round(obj.success_rate * 100)
        if obj.average_duration is None:
            # Runs imported from django-apscheduler have no duration of their own to average.
            return str(_("%(rate)d%% succeeded") % {"rate": rate})
        return str(
            _("%(rate)d%% succeeded, %(duration).2f s on average")
            % {"rate": rate, "duration": obj.average_duration}
        )

    # Permissions

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_schedule_permission(request)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.run_job")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.pause_job")

    def has_schedule_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.change_schedule")

    # The change form edits the schedule and options; the store row is written by control.change.

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = JobScheduleForm if obj is not None else JobAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        editable = ["kind", "cron", ("every", "unit"), "run_at", "time_zone", "jitter"]
        options = (
            _("Options"),
            {
                "fields": [
                    "max_instances",
                    "overlap",
                    "lock",
                    "alerts",
                    "alert_to",
                    "alert_on",
                    ("alert_after_failures", "alert_no_success_within"),
                    ("alert_longer_than", "alert_longer_than_usual"),
                    "coalesce",
                    "misfire_grace_time",
                    "timeout",
                    ("retries", "retry_backoff", "retry_backoff_max"),
                    "retry_on",
                    "calendars",
                    "runs_in",
                    ("task_backend", "task_queue"),
                ]
            },
        )
        if obj is None:
            what = (None, {"fields": ["function", "job_id", "job_name", "args", "kwargs"]})
            return [what, (_("Schedule"), {"fields": editable}), options]
        about = (
            None,
            {
                "fields": [
                    "job",
                    "function",
                    "state",
                    "problem",
                    "lock_holder",
                    "last_run",
                    "recent_runs",
                    "durations",
                    "recent_alerts",
                ]
            },
        )
        schedule = ["schedule", "preview"]
        if not self.has_change_permission(request, obj):
            return [about, (_("Schedule"), {"fields": schedule})]
        return [about, (_("Schedule"), {"fields": schedule + editable}), options]

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        if change:
            before = schedule_summary(obj.id)
            control.change(obj.id, schedule=form.spec, **form.options())
            form.change_message = f"Changed the schedule from “{before}” to “{schedule_summary(obj.id)}”"
            return
        data = form.cleaned_data
        control.add(
            data["job_id"],
            data["function"],
            schedule=form.spec,
            name=data["job_name"],
            args=data["args"] or [],
            kwargs=data["kwargs"] or {},
            **form.options(),
        )
        obj.id = data["job_id"]

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> Any:
        # What changed, in words, rather than the names of the form fields that did.
        return getattr(form, "change_message", None) or super().construct_change_message(
            request, form, formsets, add
        )

    @admin.display(description=_("durations"))
    def durations(self, obj: Any) -> SafeString:
        return duration_chart(list(Execution.objects.listed().filter(job_id=obj.id)[:CHART_RUNS]))

    @admin.display(description=_("next 5 runs"))
    def preview(self, obj: Any) -> SafeString | str:
        trigger = _job_state(obj).get("trigger")
        if trigger is None or obj.import_error:
            return "-"
        calendars = RunPolicy.from_stored(obj.run_policy).calendars
        runs = job_runs(trigger, 5, calendars) if obj.next_run_time else []
        flag = old_meaning(trigger)
        if not runs:
            return str(_("none (paused or finished)"))
        # The same list as `manage.py scheduling show JOB --next 5` and the API's "next_runs".
        listing = format_html_join(
            mark_safe("<br>"),
            "{} <small>({})</small>{}",
            (
                (
                    run.when(),
                    relative(run.at),
                    format_html(" <strong>{}</strong> {}", "⚠" if run.moved_by_clock_change else "", run.note)
                    if run.note
                    else "",
                )
                for run in runs
            ),
        )
        if flag:
            return format_html('<p class="errornote">{}</p>{}', flag, listing)
        return listing

    # Actions: each writes intent and records what it did in the admin's history (LogEntry).

    @admin.action(description=_("Run now"), permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        """While paused for maintenance, first a page that asks to confirm; confirmed, forced."""
        user = request.user.get_username()
        force = request.POST.get("force") == "yes"
        pause = control.maintenance()
        if pause is not None and not force:
            return self._confirm_run(request, queryset, pause)
        done = self._apply(
            request,
            queryset,
            lambda job: control.run_now(job.id, requested_by=user, force=force),
            "Requested a run now, forced during maintenance" if force else "Requested a run now",
        )
        if done:
            self.message_user(
                request,
                ngettext(
                    "Asked the scheduler to run %(count)d job now.",
                    "Asked the scheduler to run %(count)d jobs now.",
                    done,
                )
                % {"count": done},
            )
            self._warn_if_no_scheduler(request)
        return None

    def _confirm_run(self, request: HttpRequest, queryset: QuerySet[Job], pause: Maintenance) -> HttpResponse:
        # The same POST again, with force: an action from the list and a job page's button alike.
        replay = [
            (name, value)
            for name, values in request.POST.lists()
            if name not in ("csrfmiddlewaretoken", "force")
            for value in values
        ]
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:scheduling_job_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": _("Run now during maintenance?"),
            "pause": pause,
            "jobs": list(queryset),
            "replay": replay,
            "back": back,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/scheduling/job/run_confirm.html", context)

    @admin.action(description=_("Pause"), permissions=["pause"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = self._apply(request, queryset, lambda job: control.pause(job.id), "Paused")
        self._report(request, ngettext("Paused %(count)d job.", "Paused %(count)d jobs.", done), done)

    @admin.action(description=_("Resume"), permissions=["pause"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = self._apply(request, queryset, lambda job: control.resume(job.id), "Resumed")
        self._report(request, ngettext("Resumed %(count)d job.", "Resumed %(count)d jobs.", done), done)

    @admin.action(description=_("Reset schedule to the code's declaration"), permissions=["schedule"])
    def reset_schedule(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = self._apply(
            request,
            queryset,
            reset_with_message,
            "Reset the schedule to the code's declaration",
        )
        self._report(
            request,
            ngettext(
                "Reset %(count)d job to its declaration.", "Reset %(count)d jobs to their declarations.", done
            ),
            done,
        )

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[Job], act: Callable[[Job], Any], log: str
    ) -> int:
        done = 0
        for job in queryset:
            try:
                message = act(job)
            except control.UnknownJobError:
                self.message_user(
                    request,
                    _("%(job)s is not declared in the code, so it has no declaration to go back to.")
                    % {"job": job.id},
                    messages.WARNING,
                )
                continue
            # Loading a job imports its function; a broken job cannot be changed until it loads.
            except Exception as exc:
                self.message_user(
                    request,
                    _("%(job)s could not be changed: %(error)s") % {"job": job.id, "error": exc},
                    messages.ERROR,
                )
                continue
            self.log_change(request, job, message if isinstance(message, str) else log)
            done += 1
        return done

    def _report(self, request: HttpRequest, text: str, done: int) -> None:
        """``text``: ngettext called with literal strings, which makemessages extracts."""
        if done:
            self.message_user(request, text % {"count": done})

    def _warn_if_no_scheduler(self, request: HttpRequest) -> None:
        if not scheduler_status().alive:
            self.message_user(
                request,
                _("No scheduler is running: the run will start when 'manage.py runscheduler' does."),
                messages.WARNING,
            )

    # The job page: buttons for the same actions, its recent runs, the status panel on the list.

    def get_urls(self) -> list[URLPattern]:
        actions = {
            "run": self.run_now,
            "pause": self.pause,
            "resume": self.resume,
            "reset": self.reset_schedule,
        }
        maintenance = path(
            "maintenance/",
            self.admin_site.admin_view(require_POST(self.maintenance_view)),
            name="scheduling_maintenance",
        )
        urls = [
            path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(require_POST(self._button_view(action, name))),
                name=f"scheduling_job_{name}",
            )
            for name, action in actions.items()
        ]
        timeline = path(
            "timeline/", self.admin_site.admin_view(self.timeline_view), name="scheduling_job_timeline"
        )
        urls.append(
            path(
                "<path:object_id>/run-with-arguments/",
                self.admin_site.admin_view(self.run_with_arguments_view),
                name="scheduling_job_run_with_arguments",
            )
        )
        return [maintenance, timeline, *urls, *super().get_urls()]

    def timeline_view(self, request: HttpRequest) -> HttpResponse:
        """Every job's runs over the last 24 hours or 7 days (``?window=24h|7d``, ``?job=ID``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = Window.of(request.GET.get("window"))
        job = request.GET.get("job") or None
        timeline = Timeline.load(window, job)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Timeline of runs"),
            "timeline": timeline,
            "chart": Drawing(timeline).svg(),
            "job": job,
            "windows": window_choices(window),
            "legend": legend(),
        }
        return TemplateResponse(request, "admin/scheduling/job/timeline.html", context)

    def run_with_arguments_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Run now, with arguments of its own: a form prefilled with the job's, checked against
        its function's signature, each error next to its field."""
        # The form shows the job's stored arguments: reading them takes the view permission too.
        if not (self.has_run_permission(request) and self.has_view_permission(request)):
            raise PermissionDenied
        job = get_object_or_404(Job, pk=unquote(object_id))
        form = RunArgumentsForm(request.POST or None, initial=RunArgumentsForm.initial_for(_job_state(job)))
        if control.maintenance() is None:
            del form.fields["force"]
        if request.method == "POST" and form.is_valid() and self._request_run(request, job, form):
            return HttpResponseRedirect(reverse("admin:scheduling_job_change", args=[quote(job.pk)]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": job,
            "form": form,
            "title": _("Run %(job)s now with arguments") % {"job": job.pk},
        }
        return TemplateResponse(request, "admin/scheduling/job/run_with_arguments.html", context)

    def _request_run(self, request: HttpRequest, job: Job, form: RunArgumentsForm) -> bool:
        data = form.cleaned_data
        try:
            run = control.run_now(
                job.id,
                requested_by=request.user.get_username(),
                args=data["args"],
                kwargs=data["kwargs"],
                force=bool(data.get("force")),
            )
        except control.MaintenanceError as exc:
            # Paused since the form was shown: it shows "Run anyway" now.
            if "force" not in form.fields:
                form.fields["force"] = RunArgumentsForm.base_fields["force"]
            form.add_error(None, str(exc))
            return False
        except validation.InputError as exc:
            field = exc.field.split(".")[0]
            form.add_error(field if field in form.fields else None, str(exc))
            return False
        except control.JobLoadError as exc:
            form.add_error(None, str(exc))
            return False
        self.log_change(request, job, control.run_now_message(run))
        self.message_user(request, _("Asked the scheduler to run %(job)s now.") % {"job": job.id})
        self._warn_if_no_scheduler(request)
        return True

    def _button_view(self, action: Any, name: str) -> Callable[..., HttpResponse]:
        permission = {"run": "run", "pause": "pause", "resume": "pause", "reset": "schedule"}[name]

        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            if not getattr(self, f"has_{permission}_permission")(request):
                raise PermissionDenied
            # Like every admin URL, this one carries the id quoted ("_" as "_5F").
            job = get_object_or_404(Job, pk=unquote(object_id))
            response = action(request, Job.objects.filter(pk=job.pk))
            if response is not None:  # Run now asks to confirm during maintenance
                return response
            return HttpResponseRedirect(reverse("admin:scheduling_job_change", args=[quote(job.pk)]))

        return view

    def maintenance_view(self, request: HttpRequest) -> HttpResponse:
        """The status panel's form: pause every job for maintenance, or lift the pause."""
        if not request.user.has_perm("scheduling.change_maintenance"):
            raise PermissionDenied
        if "off" in request.POST:
            if control.end_maintenance():
                self.log_change(request, Maintenance.objects.get(), "Lifted the maintenance pause")
                self.message_user(request, _("The maintenance pause is lifted: runs start again."))
        else:
            try:
                pause = control.start_maintenance(
                    request.POST.get("reason", ""),
                    request.user.get_username(),
                    request.POST.get("until") or None,
                )
            except validation.InputError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.log_change(request, pause, f"Paused for maintenance: {pause.stored_text()}")
                self.message_user(
                    request,
                    _("The scheduler is %(pause)s. No new runs start until it is lifted.")
                    % {"pause": pause.describe()},
                    messages.WARNING,
                )
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
            target = reverse("admin:scheduling_job_changelist")
        return HttpResponseRedirect(target)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**(extra_context or {}), "scheduler_status": scheduler_status()}
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "recent_executions": Execution.objects.listed().filter(job_id=unquote(object_id))[
                :RECENT_RUNS_ON_PAGE
            ],
            "can_run": self.has_run_permission(request),
            "can_pause": self.has_pause_permission(request),
            "can_reset": self.has_schedule_permission(request),
            **cancel_context(request),
        }
        return super().change_view(request, object_id, form_url, context)


def reset_with_message(job: Job) -> str:
    before = schedule_summary(job.id)
    control.reset(job.id)
    return f"Reset the schedule to the code's declaration: from “{before}” to “{schedule_summary(job.id)}”"


def _job_state(obj: Any) -> dict[str, Any]:
    """The pickled APScheduler state of a row, unpickled once per row and page.

    Unpickling the state imports only APScheduler's trigger classes, not the job's function,
    so it works for broken jobs too.
    """
    if not hasattr(obj, "_scheduling_state"):
        try:
            obj._scheduling_state = unpickle(obj.job_state)
        # A state that cannot be read at all still gets a row in the list.
        except Exception:
            obj._scheduling_state = {}
    return obj._scheduling_state


def attempts_text(attempts: int) -> str:
    return ngettext("%(count)d attempt", "%(count)d attempts", attempts) % {"count": attempts}


def attempts_list(delivery: AlertDelivery) -> SafeString:
    """Every try at a delivery, in order: when, and what stopped it (nothing: it was sent)."""
    tries = delivery.attempt_log.all()
    if not tries:
        return mark_safe("")
    return format_html(
        '<ul class="scheduling-attempts">{}</ul>',
        format_html_join(
            "",
            "<li>{}: {}</li>",
            ((format_local(item.at), item.error or _("sent")) for item in tries),
        ),
    )


def delivery_text(delivery: AlertDelivery) -> SafeString:
    """ "ops@example.com: Sent", with the attempts and the last error while it fails."""
    destination = shown_destination(delivery.destination)
    if not delivery.last_error:
        return format_html("{}: {}", destination, delivery.get_status_display())
    return format_html(
        "{}: {} ({}, {})",
        destination,
        delivery.get_status_display(),
        attempts_text(delivery.attempts),
        delivery.last_error,
    )
