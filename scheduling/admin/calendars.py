"""Exclusion calendars: made and edited here, with their periods inline; those declared in code
are shown read-only (the code writes them at every scheduler start, so an edit would not last)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from scheduling import calendars, validation
from scheduling.models import Calendar, CalendarPeriod
from scheduling.queries import jobs_naming


class CalendarForm(forms.ModelForm):
    class Meta:
        model = Calendar
        fields = ["name", "description", "timezone", "weekdays_only"]

    # The same rules, in the same words, as scheduling.calendar() in code.
    def clean_name(self) -> str:
        name = _checked(lambda: validation.calendar_name("name", self.cleaned_data.get("name")))
        old = self.initial.get("name")
        # A rename would leave the jobs naming the old name with a calendar that excludes nothing.
        if self.instance.pk and old and name != old and (naming := jobs_naming([old])[old]):
            raise forms.ValidationError(
                _("Jobs name this calendar (%(jobs)s): change their calendars first, then rename it.")
                % {"jobs": ", ".join(naming)},
                code="calendar_in_use",
            )
        return str(name)

    def clean_timezone(self) -> str:
        zone = (self.cleaned_data.get("timezone") or "").strip()
        _checked(lambda: calendars.check_zone(zone))
        return zone


class PeriodForm(forms.ModelForm):
    class Meta:
        model = CalendarPeriod
        fields = ["day", "start", "end", "label"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors or data.get("DELETE"):
            return data
        try:
            # Aware already: the admin reads what is typed in the site's time zone.
            data["day"], data["start"], data["end"] = validation.calendar_period(
                data.get("day"), data.get("start"), data.get("end"), calendars.check_zone(None)
            )
        except validation.InputError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        return data


def _checked(check: Any) -> Any:
    try:
        return check()
    except validation.InputError as exc:
        raise forms.ValidationError(str(exc), code=exc.code) from None


class PeriodInline(admin.TabularInline):
    model = CalendarPeriod
    form = PeriodForm
    extra = 1
    max_num = calendars.MAX_PERIODS
    verbose_name = _("excluded period")
    verbose_name_plural = _("excluded periods: a whole day, or a start and an end (the end is not excluded)")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)


def _editable(calendar: Calendar | None) -> bool:
    return calendar is None or calendar.source != Calendar.Source.CODE


@admin.register(Calendar)
class CalendarAdmin(admin.ModelAdmin):
    form = CalendarForm
    inlines = [PeriodInline]
    list_display = ["name", "description", "zone", "excludes", "source"]
    list_filter = ["source", "weekdays_only"]
    search_fields = ["name", "description"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Calendar]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                days=Count("periods", filter=Q(periods__day__isnull=False)),
                ranges=Count("periods", filter=Q(periods__day__isnull=True)),
            )
        )

    @admin.display(description=_("time zone"), ordering="timezone")
    def zone(self, obj: Calendar) -> str:
        return obj.timezone or str(_("the site's"))

    @admin.display(description=_("excludes"))
    def excludes(self, obj: Any) -> str:
        parts = [str(_("weekends"))] if obj.weekdays_only else []
        if obj.days:
            parts.append(ngettext("%(count)d day", "%(count)d days", obj.days) % {"count": obj.days})
        if obj.ranges:
            parts.append(ngettext("%(count)d range", "%(count)d ranges", obj.ranges) % {"count": obj.ranges})
        return ", ".join(parts) or str(_("nothing yet"))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Refuse, as for a protected relation, to delete a calendar a job still names (nor one
        declared in code, which the next start would bring back)."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        objs = list(objs)
        naming = jobs_naming(obj.name for obj in objs)
        refusals = [
            _("%(calendar)s: named by the job(s) %(jobs)s; take it off them first")
            % {"calendar": name, "jobs": ", ".join(jobs)}
            for name, jobs in sorted(naming.items())
            if jobs
        ]
        refusals += [
            _("%(calendar)s: declared in code; remove the declaration instead") % {"calendar": obj.name}
            for obj in objs
            if obj.source == Calendar.Source.CODE
        ]
        return deleted, counts, perms_needed, [*protected, *refusals]
