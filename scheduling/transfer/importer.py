"""A schedules file applied to the database: what differs, then the changes made through
``scheduling.control`` (and so checked by ``scheduling.validation``), in one transaction,
each recorded in the admin's history as the importing user, who needs the permissions the
admin asks for the same changes. Jobs and calendars declared in code stay the code's: an import
never replaces a declared job's function nor removes one.

A dry run makes the same changes and rolls them back, so it refuses exactly what a real
import would refuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from apscheduler.job import Job as StoredJob
from django.apps import apps
from django.db import router, transaction
from django.db.models import Model
from django.utils import translation
from django.utils.translation import gettext as _
from django_apscheduler.models import DjangoJob

from scheduling import calendars, control, declarations, validation
from scheduling.models import Calendar, Job, ScheduledJob
from scheduling.queries import schedule_summary
from scheduling.schedules import ScheduleError, build_trigger, check_fires, spec_of
from scheduling.store import policies_of
from scheduling.transfer.export import calendar_entries, options_of

# What an existing job added outside the code cannot change in place: it is replaced.
IDENTITY_FIELDS = ("function", "name", "args", "kwargs")

# The permission each kind of change needs, as the admin asks for it (scheduling/admin/).
PERMISSIONS = {
    ("job", "added"): ("add_job",),
    ("job", "changed"): ("change_schedule",),
    ("job", "replaced"): ("delete_job", "add_job"),
    ("job", "paused"): ("pause_job",),
    ("job", "resumed"): ("pause_job",),
    ("job", "removed"): ("delete_job",),
    ("calendar", "added"): ("add_calendar",),
    ("calendar", "changed"): ("change_calendar",),
    ("calendar", "removed"): ("delete_calendar",),
}


class ImportRefusedError(ValueError):
    """A file that cannot be applied; the message names the job or calendar and the field."""


@dataclass(frozen=True)
class Change:
    kind: str  # added, changed, replaced, paused, resumed, removed, skipped, kept
    what: str  # job or calendar
    name: str
    detail: str = ""

    def line(self) -> str:
        line = f"{kind_word(self.kind):<9} {self.what_word()} {self.name}"
        return f"{line}: {self.detail}" if self.detail else line

    def what_word(self) -> str:
        return _("job") if self.what == "job" else _("calendar")


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
        # Judged on the changes made (and so rolled back if refused): the permissions the admin
        # would ask for to make the same ones.
        check_permissions(user, importer.changes)
        if dry_run:
            transaction.set_rollback(True, using=router.db_for_write(DjangoJob))
    return importer.changes


def check_permissions(user: Any, changes: list[Change]) -> None:
    """Refuse changes ``user`` could not make in the admin, naming each missing permission."""
    missing: dict[str, Change] = {}
    for change in changes:
        for codename in PERMISSIONS.get((change.what, change.kind), ()):
            permission = f"scheduling.{codename}"
            if permission not in missing and not user.has_perm(permission):
                missing[permission] = change
    if missing:
        raise ImportRefusedError(
            _("user %(user)r lacks the permission %(permissions)s")
            % {
                "user": user.get_username(),
                "permissions": ", ".join(
                    f"{permission} ({kind_word(change.kind)} {change.what_word()} {change.name})"
                    for permission, change in missing.items()
                ),
            }
        )


class _Importer:
    def __init__(self, user: Any) -> None:
        self.user = user
        self.changes: list[Change] = []

    def calendars(self, entries: list[dict[str, Any]]) -> None:
        current = {entry["name"]: entry for entry in calendar_entries()}
        for entry in entries:
            # As control.save_calendar stores it (stripped): compared, looked up and recorded by
            # that name, else "Freeze " would overwrite "Freeze" as a calendar added.
            with _refusing(_("calendar %(name)r") % {"name": entry["name"]}):
                name = validation.calendar_name("name", entry["name"])
            wanted = {**_CALENDAR_DEFAULTS, **entry, "name": name}
            wanted["periods"] = [{**_PERIOD_DEFAULTS, **period} for period in wanted["periods"]]
            existing = current.get(name)
            with _refusing(_("calendar %(name)r") % {"name": name}):
                changed = _calendar_changes(wanted, existing)
                if not changed:
                    continue
                control.save_calendar(
                    name,
                    description=wanted["description"],
                    timezone_name=wanted["timezone"],
                    weekdays_only=wanted["weekdays_only"],
                    source=wanted["source"],
                    periods=[_period(period) for period in wanted["periods"]],
                )
            if existing is None:
                self._record("added", "calendar", name, lambda: _("Added by import"))
            else:
                fields = ", ".join(changed)
                self._record(
                    "changed",
                    "calendar",
                    name,
                    partial(_changed_by_import, fields),
                    fields,
                )

    def jobs(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            with _refusing(_("job %(id)r") % {"id": entry["id"]}):
                self._job(entry)

    def _job(self, entry: dict[str, Any]) -> None:
        job_id = validation.job_id(entry["id"], "id")
        if (reason := _skip_reason(entry)) is not None:
            self.changes.append(Change("skipped", "job", job_id, reason))
            return
        # Checked before anything is written: an unknown name (job_id, schedule) would otherwise
        # reach control's keywords.
        validation.options(entry.get("options", {}))
        validation.check_spec(entry["schedule"])
        check_fires(build_trigger(entry["schedule"]))
        current = _stored(job_id)
        declared = job_id in declarations.registry
        if declared:
            # The file's schedule, options and overridden flag are written below: no reset first,
            # which would change the job at every import of a file whose job differs from the
            # declaration here without being flagged overridden.
            if current is None:
                control.reset(job_id)
                self._record("added", "job", job_id, lambda: _("Added by import, as declared in code"))
        elif current is None:
            self._add(entry)
            self._record("added", "job", job_id, lambda: _("Added by import"))
        elif _identity_of(current) != _identity_of_entry(entry):
            control.delete(job_id)
            self._add(entry)
            self._record(
                "replaced",
                "job",
                job_id,
                lambda: _("Replaced by import (its function, name or arguments differ)"),
            )
        self._change(entry, control.load(job_id), declared)
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

    def _change(self, entry: dict[str, Any], job: StoredJob, declared: bool) -> None:
        """The file's schedule and options; for a job declared in code, its overridden flag too."""
        job_id = entry["id"]
        wanted = spec_of(build_trigger(entry["schedule"]))  # as stored, so equal ones compare equal
        schedule = entry["schedule"] if wanted != spec_of(job.trigger) else None
        current = options_of(job, policies_of([job_id])[job_id])
        options = {
            name: value for name, value in entry.get("options", {}).items() if current.get(name, ...) != value
        }
        overridden = bool(entry.get("overridden", False))
        # control.change flags a declared job overridden, and mark_overridden below sets the flag
        # as the file has it: a change of its own only where that differs from the flag before.
        flag_changed = declared and _overridden(job_id) != overridden
        if schedule is None and not options and not flag_changed:
            return
        with translation.override("en"):  # for the history, as _record writes it
            before = schedule_summary(job_id)
        messages: list[Callable[[], str]] = []
        if schedule is not None or options:
            control.change(job_id, schedule=schedule, **options)
            messages.append(
                lambda: (
                    _("Changed by import from “%(before)s” to “%(after)s”")
                    % {"before": before, "after": schedule_summary(job_id)}
                )
            )
        if declared:
            # After the change, which flags a declared job overridden whatever the file says.
            control.mark_overridden(job_id, overridden)
        if flag_changed:
            messages.append(
                lambda: (
                    _("Marked overridden outside the code by import")
                    if overridden
                    else _("Marked as following its declaration in code by import")
                )
            )
        fields = ([_("schedule")] if schedule is not None else []) + sorted(options)
        fields += [_("overridden")] if flag_changed else []
        self._record(
            "changed", "job", job_id, lambda: "; ".join(message() for message in messages), ", ".join(fields)
        )

    def _pause_or_resume(self, entry: dict[str, Any], job: StoredJob) -> None:
        paused = job.next_run_time is None
        if entry.get("paused", False) == paused:
            return
        if paused:
            control.resume(entry["id"])
            self._record("resumed", "job", entry["id"], lambda: _("Resumed by import"))
        else:
            control.pause(entry["id"])
            self._record("paused", "job", entry["id"], lambda: _("Paused by import"))

    def leftovers(self, document: dict[str, Any], prune: bool) -> None:
        """What the database has and the file has not: removed with ``prune``, else kept."""
        in_file = {entry["id"] for entry in document.get("jobs", [])}
        in_code = set(declarations.registry) | set(
            ScheduledJob.objects.filter(source=ScheduledJob.Source.CODE).values_list("id", flat=True)
        )
        for job_id in DjangoJob.objects.exclude(id__in=in_file).order_by("id").values_list("id", flat=True):
            if job_id in in_code:
                # The code puts it back at the scheduler's next start: removing it is the code's.
                self.changes.append(
                    Change("kept", "job", job_id, _("declared in code: import never removes it"))
                )
                continue
            if not prune:
                self.changes.append(Change("kept", "job", job_id, _("not in the file (--prune removes it)")))
                continue
            self._record("removed", "job", job_id, lambda: _("Removed by import"))
            with _refusing(_("job %(id)r") % {"id": job_id}):
                control.delete(job_id)
        names = {validation.calendar_name("name", entry["name"]) for entry in document.get("calendars", [])}
        for calendar in Calendar.objects.exclude(name__in=names).order_by("name"):
            if calendar.source == Calendar.Source.CODE:
                self.changes.append(
                    Change("kept", "calendar", calendar.name, _("declared in code: import never removes it"))
                )
                continue
            if not prune:
                self.changes.append(
                    Change("kept", "calendar", calendar.name, _("not in the file (--prune removes it)"))
                )
                continue
            self._record("removed", "calendar", calendar.name, lambda: _("Removed by import"))
            with _refusing(_("calendar %(name)r") % {"name": calendar.name}):
                control.delete_calendar(calendar.name)

    def _record(self, kind: str, what: str, name: str, message: Callable[[], str], detail: str = "") -> None:
        """The change, in the diff and in the admin's history (before a removal: it needs the row).

        ``message`` is made in English, whatever the command's language: what is stored stays in
        English (the admin's own history messages are stored untranslated too)."""
        self.changes.append(Change(kind, what, name, detail))
        row: Model | None = (
            Job.objects.filter(id=name).first()
            if what == "job"
            else Calendar.objects.filter(name=name).first()
        )
        if row is None or not apps.is_installed("django.contrib.admin"):
            return
        from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

        with translation.override("en"):
            english_message = message()
        flag = {"added": ADDITION, "removed": DELETION}.get(kind, CHANGE)
        LogEntry.objects.log_actions(
            user_id=self.user.pk,
            queryset=type(row)._default_manager.filter(pk=row.pk),
            action_flag=flag,
            change_message=english_message,
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
    declaration = declarations.registry.get(entry["id"])
    if entry.get("source") == ScheduledJob.Source.CODE and declaration is None:
        return _("it is declared in code where it was exported, but not in this code")
    if declaration is not None and (
        entry.get("source") != ScheduledJob.Source.CODE or function != declaration.func_ref
    ):
        return _(
            "this code declares a job with this id (function %(declared)s): import never replaces it"
        ) % {"declared": declaration.func_ref}
    return None


def _changed_by_import(fields: str) -> str:
    return _("Changed by import: %(fields)s") % {"fields": fields}


def _overridden(job_id: str) -> bool:
    return ScheduledJob.objects.filter(id=job_id, overridden_at__isnull=False).exists()


def _calendar_changes(wanted: dict[str, Any], existing: dict[str, Any] | None) -> list[str]:
    """The fields of ``wanted`` that differ from the stored calendar (all of them: a new one).

    Periods are compared as the moments they mean, not as text: "2026-12-31T00:00" in the
    calendar's zone is the period stored as "2026-12-30T23:00:00+00:00".
    """
    if existing is None:
        return list(wanted)
    changed = [key for key in wanted if key != "periods" and wanted[key] != existing.get(key)]
    zone = calendars.check_zone(wanted["timezone"])
    if _moments(wanted["periods"], zone) != _moments(existing["periods"], zone):
        changed.append("periods")
    return changed


def _moments(periods: list[dict[str, Any]], zone: dt.tzinfo) -> list[tuple[Any, ...]]:
    """Each period as ``control.save_calendar`` stores it (label, then day or aware start and end),
    in the order the database gives them back: days, then ranges, each by time.

    Start and end are in UTC: aware datetimes in two zones never compare equal where one is in a
    repeated hour (PEP 495), so 01:30 of the night clocks go back would differ at every import."""
    moments = [
        (
            validation.text("label", period.get("label", ""), calendars.MAX_LABEL_LENGTH).strip(),
            *(
                moment.astimezone(dt.UTC) if isinstance(moment, dt.datetime) else moment
                for moment in validation.calendar_period(parsed["day"], parsed["start"], parsed["end"], zone)
            ),
        )
        for parsed, period in ((_period(period), period) for period in periods)
    ]
    return sorted(
        moments,
        key=lambda moment: (moment[1] is None, moment[1] or dt.date.min, moment[2] or validation.FIRST_DATE),
    )


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
