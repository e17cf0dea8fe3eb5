"""A schedules file applied to the database: what differs, then the changes made through
``scheduling.control`` (and so checked by ``scheduling.validation``), in one transaction,
each recorded in the admin's history as the importing user.

A dry run makes the same changes and rolls them back, so it refuses exactly what a real
import would refuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from apscheduler.job import Job as StoredJob
from django.apps import apps
from django.db import router, transaction
from django.db.models import Model
from django.utils.translation import gettext as _
from django_apscheduler.models import DjangoJob

from scheduling import control, declarations, validation
from scheduling.models import Calendar, Job, ScheduledJob
from scheduling.queries import schedule_summary
from scheduling.schedules import ScheduleError, build_trigger, spec_of
from scheduling.store import policies_of
from scheduling.transfer.export import calendar_entries, options_of

# What an existing job added outside the code cannot change in place: it is replaced.
IDENTITY_FIELDS = ("function", "name", "args", "kwargs")


class ImportRefusedError(ValueError):
    """A file that cannot be applied; the message names the job or calendar and the field."""


@dataclass(frozen=True)
class Change:
    kind: str  # added, changed, replaced, paused, resumed, removed, skipped, kept
    what: str  # job or calendar
    name: str
    detail: str = ""

    def line(self) -> str:
        what = _("job") if self.what == "job" else _("calendar")
        line = f"{kind_word(self.kind):<9} {what} {self.name}"
        return f"{line}: {self.detail}" if self.detail else line


def kind_word(kind: str) -> str:
    """The word for a kind of change, in the active language."""
    return {
        "added": _("added"),
        "changed": _("changed"),
        "replaced": _("replaced"),
        "paused": _("paused"),
        "resumed": _("resumed"),
        "removed": _("removed"),
        "skipped": _("skipped"),
        "kept": _("kept"),
    }[kind]


def import_document(
    document: dict[str, Any], user: Any, *, prune: bool = False, dry_run: bool = False
) -> list[Change]:
    """Apply ``document`` (checked by ``document.check``) as ``user``; the changes, in order.

    :raises ImportRefusedError: nothing was changed.
    """
    with transaction.atomic(using=router.db_for_write(DjangoJob)):
        importer = _Importer(user)
        importer.calendars(document.get("calendars", []))
        importer.jobs(document.get("jobs", []))
        importer.leftovers(document, prune)
        if dry_run:
            transaction.set_rollback(True, using=router.db_for_write(DjangoJob))
    return importer.changes


class _Importer:
    def __init__(self, user: Any) -> None:
        self.user = user
        self.changes: list[Change] = []

    def calendars(self, entries: list[dict[str, Any]]) -> None:
        current = {entry["name"]: entry for entry in calendar_entries()}
        for entry in entries:
            name = entry["name"]
            wanted = {**_CALENDAR_DEFAULTS, **entry}
            wanted["periods"] = [{**_PERIOD_DEFAULTS, **period} for period in wanted["periods"]]
            existing = current.get(name)
            if existing == wanted:
                continue
            with _refusing(_("calendar %(name)r") % {"name": name}):
                control.save_calendar(
                    name,
                    description=wanted["description"],
                    timezone_name=wanted["timezone"],
                    weekdays_only=wanted["weekdays_only"],
                    source=wanted["source"],
                    periods=[_period(period) for period in wanted["periods"]],
                )
            if existing is None:
                self._record("added", "calendar", name, _("Added by import"))
            else:
                fields = ", ".join(key for key in wanted if wanted[key] != existing.get(key))
                self._record(
                    "changed",
                    "calendar",
                    name,
                    _("Changed by import: %(fields)s") % {"fields": fields},
                    fields,
                )

    def jobs(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            with _refusing(_("job %(id)r") % {"id": entry["id"]}):
                self._job(entry)

    def _job(self, entry: dict[str, Any]) -> None:
        job_id = entry["id"]
        if (reason := _skip_reason(entry)) is not None:
            self.changes.append(Change("skipped", "job", job_id, reason))
            return
        current = _stored(job_id)
        if entry.get("source") == ScheduledJob.Source.CODE:
            overridden = ScheduledJob.objects.filter(id=job_id, overridden_at__isnull=False).exists()
            if current is None:
                control.reset(job_id)
                self._record("added", "job", job_id, _("Added by import, as declared in code"))
            elif overridden and not entry.get("overridden", False):
                control.reset(job_id)
                self._record("changed", "job", job_id, _("Reset to its declaration by import"), _("reset"))
        elif current is None:
            self._add(entry)
            self._record("added", "job", job_id, _("Added by import"))
        elif _identity_of(current) != _identity_of_entry(entry):
            control.delete(job_id)
            self._add(entry)
            self._record(
                "replaced", "job", job_id, _("Replaced by import (its function, name or arguments differ)")
            )
        self._change(entry, control.load(job_id))
        self._pause_or_resume(entry, control.load(job_id))

    def _add(self, entry: dict[str, Any]) -> None:
        control.add(
            entry["id"],
            entry.get("function", ""),
            schedule=entry["schedule"],
            name=entry.get("name", ""),
            args=entry.get("args", []),
            kwargs=entry.get("kwargs", {}),
            **entry.get("options", {}),
        )

    def _change(self, entry: dict[str, Any], job: StoredJob) -> None:
        job_id = entry["id"]
        validation.check_spec(entry["schedule"])
        wanted = spec_of(build_trigger(entry["schedule"]))  # as stored, so equal ones compare equal
        schedule = entry["schedule"] if wanted != spec_of(job.trigger) else None
        current = options_of(job, policies_of([job_id])[job_id])
        options = {
            name: value for name, value in entry.get("options", {}).items() if current.get(name, ...) != value
        }
        if schedule is None and not options:
            return
        before = schedule_summary(job_id)
        control.change(job_id, schedule=schedule, **options)
        fields = ", ".join(([_("schedule")] if schedule is not None else []) + sorted(options))
        self._record(
            "changed",
            "job",
            job_id,
            _("Changed by import from “%(before)s” to “%(after)s”")
            % {"before": before, "after": schedule_summary(job_id)},
            fields,
        )

    def _pause_or_resume(self, entry: dict[str, Any], job: StoredJob) -> None:
        paused = job.next_run_time is None
        if entry.get("paused", False) == paused:
            return
        if paused:
            control.resume(entry["id"])
            self._record("resumed", "job", entry["id"], _("Resumed by import"))
        else:
            control.pause(entry["id"])
            self._record("paused", "job", entry["id"], _("Paused by import"))

    def leftovers(self, document: dict[str, Any], prune: bool) -> None:
        """What the database has and the file has not: removed with ``prune``, else kept."""
        in_file = {entry["id"] for entry in document.get("jobs", [])}
        for job_id in DjangoJob.objects.exclude(id__in=in_file).order_by("id").values_list("id", flat=True):
            if not prune:
                self.changes.append(Change("kept", "job", job_id, _("not in the file (--prune removes it)")))
                continue
            self._record("removed", "job", job_id, _("Removed by import"))
            with _refusing(_("job %(id)r") % {"id": job_id}):
                control.delete(job_id)
        names = {entry["name"] for entry in document.get("calendars", [])}
        for calendar in Calendar.objects.exclude(name__in=names).order_by("name"):
            if not prune:
                self.changes.append(
                    Change("kept", "calendar", calendar.name, _("not in the file (--prune removes it)"))
                )
                continue
            self._record("removed", "calendar", calendar.name, _("Removed by import"))
            with _refusing(_("calendar %(name)r") % {"name": calendar.name}):
                control.delete_calendar(calendar.name)

    def _record(self, kind: str, what: str, name: str, message: str, detail: str = "") -> None:
        """The change, in the diff and in the admin's history (before a removal: it needs the row)."""
        self.changes.append(Change(kind, what, name, detail))
        row: Model | None = (
            Job.objects.filter(id=name).first()
            if what == "job"
            else Calendar.objects.filter(name=name).first()
        )
        if row is None or not apps.is_installed("django.contrib.admin"):
            return
        from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

        flag = {"added": ADDITION, "removed": DELETION}.get(kind, CHANGE)
        LogEntry.objects.log_actions(
            user_id=self.user.pk,
            queryset=type(row)._default_manager.filter(pk=row.pk),
            action_flag=flag,
            change_message=message,
            single_object=True,
        )


_CALENDAR_DEFAULTS: dict[str, Any] = {
    "description": "",
    "timezone": "",
    "weekdays_only": False,
    "source": Calendar.Source.ADMIN.value,
    "periods": [],
}

_PERIOD_DEFAULTS: dict[str, Any] = {"day": None, "start": None, "end": None, "label": ""}


def _skip_reason(entry: dict[str, Any]) -> str | None:
    function = entry.get("function", "")
    if "error" in entry or "schedule" not in entry:
        return _("it could not be read where it was exported (%(error)s)") % {
            "error": entry.get("error", _("no schedule"))
        }
    if not entry.get("declared", True) or function not in declarations.schedulables:
        return _("its function %(function)s is not declared here with @job or @schedulable") % {
            "function": function or "?"
        }
    if entry.get("source") == ScheduledJob.Source.CODE and entry["id"] not in declarations.registry:
        return _("it is declared in code where it was exported, but not in this code")
    return None


def _stored(job_id: str) -> StoredJob | None:
    try:
        return control.load(job_id)
    except control.UnknownJobError:
        return None


def _identity_of(job: StoredJob) -> tuple[Any, ...]:
    return (job.func_ref, job.name, list(job.args), dict(job.kwargs))


def _identity_of_entry(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entry.get("function"),
        entry.get("name") or entry["id"],
        entry.get("args", []),
        entry.get("kwargs", {}),
    )


def _period(period: dict[str, Any]) -> dict[str, Any]:
    """A period's ISO 8601 texts as the dates and times the validator checks."""
    parsed: dict[str, Any] = {"label": period.get("label", "")}
    for field, parse in (
        ("day", dt.date.fromisoformat),
        ("start", dt.datetime.fromisoformat),
        ("end", dt.datetime.fromisoformat),
    ):
        value = period.get(field)
        if value is None:
            parsed[field] = None
            continue
        try:
            parsed[field] = parse(value)
        except (TypeError, ValueError):
            raise validation.InputError(
                field,
                "invalid_date",
                _("%(field)s must be an ISO 8601 date, not %(value)s")
                % {"field": field, "value": validation.shown(value)},
            ) from None
    return parsed


@contextmanager
def _refusing(what: str) -> Iterator[None]:
    """Errors of the control layer, as an ImportRefusedError naming what was being applied."""
    try:
        yield
    except (ScheduleError, control.UnknownJobError, control.JobLoadError, control.OldHistoryError) as error:
        raise ImportRefusedError(f"{what}: {error}") from error
