"""Operate the scheduler from a shell or a script: list, show, run, pause, resume, status, prune,
preview, maintenance, calendars, export, import.

Like the admin, it only writes intent; the running scheduler acts on it. Every subcommand but
export and import (whose file is JSON already) takes ``--json`` for scripts; an unknown job id
exits with status 1 and says so.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_apscheduler.models import DjangoJob

from scheduling import control, safejson, tokens, validation
from scheduling.calendars import check_zone
from scheduling.history.housekeeping import prune
from scheduling.models import ApiToken, Execution, Maintenance
from scheduling.policy import AlertPolicy
from scheduling.preview import Run, preview_schedule, stored_job_runs
from scheduling.queries import (
    CalendarSummary,
    alert_summary,
    calendar_summaries,
    job_summaries,
    job_summary,
    scheduler_status,
)
from scheduling.schedules import ScheduleError, format_local
from scheduling.serializers import calendar_data, iso, job_data, maintenance_data, run_data, status_data
from scheduling.transfer import document
from scheduling.transfer.export import export_document
from scheduling.transfer.importer import Change, ImportRefusedError, import_document, kind_word

MAX_RUNS = 100
MAX_PREVIEW = 1000
MAX_RETENTION_DAYS = 36500  # a century: any more overflows a date


def bounded(name: str, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to ``high``, in scheduling.validation's words."""

    def parse(value: str) -> int:
        try:
            return validation.whole_number_text(name, value, 1, high)
        except validation.InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def whole_seconds(value: str) -> int:
    """An argparse type: jitter in seconds, bounded as scheduling.validation bounds it."""
    try:
        return validation.whole_number_text("--jitter", value, 0, validation.MAX_JITTER)
    except validation.InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def json_option(name: str) -> Callable[[str], Any]:
    """An argparse type: JSON text, parsed within scheduling.safejson's limits."""

    def parse(value: str) -> Any:
        try:
            return safejson.loads(value, max_length=validation.MAX_ARGUMENTS_BYTES)
        except safejson.JsonInputError as exc:
            raise argparse.ArgumentTypeError(f"{name}: {exc}") from None

    return parse


INTERVAL_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def interval_seconds(value: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``2d``: an interval in seconds."""
    if re.fullmatch(r"[0-9]+", value):
        return int(value)
    parts = re.findall(r"(\d+)([wdhms])", value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise argparse.ArgumentTypeError(
            _("%(value)r is not an interval (e.g. 90, 15m, 1h30m, 2d)") % {"value": value}
        )
    return sum(int(number) * INTERVAL_UNITS[unit] for number, unit in parts)


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]  # argparse needs a str, in the language of the day
        return _(
            "List and operate scheduled jobs: list, show, run, cancel, pause, resume, status, prune, "
            "preview, maintenance, calendars, token, export, import."
        )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def subcommand(name: str, text: str) -> argparse.ArgumentParser:
            sub = commands.add_parser(name, help=text, description=text)
            sub.add_argument("--json", action="store_true", help=_("Print JSON for scripts."))
            return sub

        subcommand("list", _("Every job with its schedule, next run and state."))
        show = subcommand("show", _("One job and its recent runs."))
        show.add_argument("job_id")
        show.add_argument(
            "--runs",
            type=bounded("--runs", MAX_RUNS),
            default=10,
            help=_("How many recent runs (default 10)."),
        )
        show.add_argument(
            "--next", type=bounded("--next", MAX_RUNS), default=5, help=_("How many next runs (default 5).")
        )
        preview = subcommand("preview", _("The next runs of a schedule, marking those a clock change moves."))
        kind = preview.add_mutually_exclusive_group(required=True)
        kind.add_argument("--cron", help=_('A crontab line, e.g. "0,30 2 * * *" or @daily.'))
        kind.add_argument("--interval", type=interval_seconds, help=_("Seconds, or e.g. 15m, 1h30m, 2d."))
        kind.add_argument("--date", help=_("A one-off ISO 8601 date; without an offset, read in --timezone."))
        preview.add_argument("--timezone", help=_("The job's time zone (default: the site's TIME_ZONE)."))
        preview.add_argument(
            "--start", help=_("ISO 8601; without an offset, read in --timezone (default: now).")
        )
        preview.add_argument(
            "--count", type=bounded("--count", MAX_PREVIEW), default=10, help=_("How many runs (default 10).")
        )
        preview.add_argument(
            "--jitter", type=whole_seconds, help=_("Seconds of jitter, to see where it is capped.")
        )
        for name, text in (
            ("run", _("Ask the running scheduler to run jobs now.")),
            ("pause", _("Pause jobs.")),
            ("resume", _("Resume paused jobs.")),
        ):
            sub = subcommand(name, text)
            sub.add_argument("job_ids", nargs="+", metavar="job_id")
            if name == "run":
                run = sub
        run.add_argument(
            "--args",
            dest="run_args",  # not "args": call_command takes that as the positional arguments
            type=json_option("--args"),
            help=_("A JSON array: the positional arguments of this run instead of the job's (one job only)."),
        )
        run.add_argument(
            "--kwargs",
            dest="run_kwargs",
            type=json_option("--kwargs"),
            help=_("A JSON object: the keyword arguments of this run instead of the job's (one job only)."),
        )
        run.add_argument("--force", action="store_true", help=_("Run even while paused for maintenance."))
        maintenance = subcommand(
            "maintenance", _("Pause every scheduler for maintenance, or lift the pause.")
        )
        maintenance.add_argument("action", choices=["on", "off", "status"])
        maintenance.add_argument("--reason", help=_("Why (required with on); recorded on each skipped run."))
        maintenance.add_argument(
            "--until",
            help=_(
                "ISO 8601, e.g. 2026-12-24T06:00; without an offset, in the site's TIME_ZONE. "
                "The pause lifts itself then (default: only with off)."
            ),
        )
        cancel = subcommand("cancel", _("Cancel a run: stop it if it is going on, or before it starts."))
        cancel.add_argument(
            "run_id", type=bounded("run_id", 2**63 - 1), help=_("The run's id, as listed by show.")
        )
        calendars = subcommand("calendars", _("The exclusion calendars, or one with its periods and jobs."))
        calendars.add_argument("action", choices=["list", "show"])
        calendars.add_argument("name", nargs="?", help=_("The calendar to show."))
        subcommand("status", _("Is a scheduler active? Exits with status 1 when none is."))
        prune = subcommand("prune", _("Delete old execution history now."))
        prune.add_argument(
            "--older-than-days",
            type=bounded("--older-than-days", MAX_RETENTION_DAYS),
            help=_("Default: SCHEDULING_HISTORY_RETENTION."),
        )
        export = commands.add_parser(
            "export",
            help=_("Write every stored job's schedule, options and state, and the calendars, to stdout."),
            description=_(
                "Write every stored job's schedule, options and state, and the calendars, to stdout."
            ),
        )
        export.add_argument(
            "--format",
            choices=document.FORMATS,
            default="json",
            help=_("json (default) or yaml (needs PyYAML)."),
        )
        imports = commands.add_parser(
            "import",
            help=_("Apply a file written by export: shows what differs, then changes it, as --user."),
            description=_("Apply a file written by export: shows what differs, then changes it, as --user."),
        )
        imports.add_argument(
            "path", type=Path, help=_("The file: JSON, or YAML if it ends in .yaml or .yml.")
        )
        imports.add_argument("--user", required=True, help=_("Whose change the admin's history records."))
        imports.add_argument(
            "--dry-run", action="store_true", help=_("Show what would change; write nothing.")
        )
        imports.add_argument(
            "--prune", action="store_true", help=_("Also remove jobs and calendars the file does not have.")
        )
        token = commands.add_parser("token", help=_("Create, list or revoke API tokens."))
        token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")

        def token_command(name: str, text: str) -> argparse.ArgumentParser:
            sub = token_commands.add_parser(name, help=text, description=text)
            sub.add_argument("--json", action="store_true", help=_("Print JSON for scripts."))
            return sub

        create = token_command("create", _("A new token for a user; its key is shown once."))
        create.add_argument("username")
        create.add_argument("--name", required=True, help=_("What will use it, e.g. 'deploy script'."))
        token_command("list", _("Every token: name, user, key prefix, last use."))
        revoke = token_command("revoke", _("Delete the token whose key starts with PREFIX."))
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['subcommand']}")(options)

    def _emit(self, options: dict[str, Any], data: Any, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2) if options["json"] else text)

    def _list(self, options: dict[str, Any]) -> None:
        jobs = job_summaries()
        rows = [
            f"{job.id:<40} {job.schedule:<40} {format_local(job.next_run):<25} {job.state}" for job in jobs
        ]
        data = {"jobs": [job_data(job) for job in jobs]}  # as GET /api/jobs/ answers
        self._emit(options, data, "\n".join(rows) or _("No jobs."))

    def _show(self, options: dict[str, Any]) -> None:
        job = job_summary(options["job_id"])
        if job is None:
            raise CommandError(_("No stored job with id %(job)r") % {"job": options["job_id"]})
        runs = list(Execution.objects.listed().filter(job_id=job.id)[: options["runs"]])
        upcoming = stored_job_runs(job.id, options["next"])
        data = {
            **job_data(job),
            "runs": [run_data(run) for run in runs],
            "next_runs": [run.as_dict() for run in upcoming],  # as next_runs_data(), one load
        }
        lines = [
            f"{job.id}: {job.name}",
            _("  function: %(value)s") % {"value": job.function},
            _("  schedule: %(value)s") % {"value": job.schedule},
            _("  next run: %(value)s") % {"value": format_local(job.next_run)},
            _("  state:    %(value)s") % {"value": job.state},
        ]
        if job.calendars:
            lines.append(_("  calendars: %(value)s") % {"value": ", ".join(job.calendars)})
        if job.lock is not None:
            lines.append(_("  lock:     %(value)s") % {"value": job.lock})
        if job.alert is not None:
            lines.append(
                _("  alerts:   %(value)s") % {"value": alert_summary(AlertPolicy.from_stored(job.alert))}
            )
        lines += [
            _("  recent runs:") if runs else _("  no runs yet"),
        ]
        for run in runs:
            duration = "-" if run.duration is None else f"{run.duration:.3f} s"
            lines.append(
                f"    {format_local(run.scheduled_at)}  {run.status:<11} {duration:>10}  {run.exception[:80]}"
            )
        lines.append(_("  next runs:") if upcoming else _("  no next runs (paused or finished)"))
        lines += [f"    {run.line()}" for run in upcoming]
        self._emit(options, data, "\n".join(lines))

    def _preview(self, options: dict[str, Any]) -> None:
        try:
            spec = validation.schedule(
                cron=options["cron"],
                interval=options["interval"],
                date=options["date"],
                timezone_name=options["timezone"],
                jitter=options["jitter"],
            )
            runs = preview_schedule(spec, options["count"], options["start"])
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc
        self._emit(options, {"runs": [run.as_dict() for run in runs]}, _runs_text(runs))

    def _run(self, options: dict[str, Any]) -> None:
        user = f"cli:{getpass.getuser()}"
        arguments = {"args": options["run_args"], "kwargs": options["run_kwargs"]}
        if arguments != {"args": None, "kwargs": None} and len(options["job_ids"]) != 1:
            raise CommandError(_("--args and --kwargs are for one job at a time: give exactly one job id"))
        force = options["force"]
        if not force and (pause := control.maintenance()) is not None:
            raise CommandError(
                _("The scheduler is %(pause)s; nothing was run. Use --force to run anyway.")
                % {"pause": pause.describe()}
            )
        try:
            self._each(
                options,
                lambda job_id: control.run_now(job_id, requested_by=user, force=force, **arguments),
                "run requested",
            )
        except validation.InputError as exc:
            raise CommandError(
                _("Invalid arguments for %(job)s (%(field)s): %(error)s")
                % {"job": options["job_ids"][0], "field": exc.field, "error": exc}
            ) from exc
        if not scheduler_status().alive:
            self.stderr.write(
                _("No scheduler is running: the runs start when 'manage.py runscheduler' does.")
            )

    def _cancel(self, options: dict[str, Any]) -> None:
        try:
            run = control.cancel(options["run_id"], f"cli:{getpass.getuser()}")
        except (control.UnknownRunError, control.RunEndedError) as exc:
            raise CommandError(_("%(error)s; nothing was cancelled") % {"error": exc}) from None
        if run.status == Execution.Status.CANCELLED:
            # Cancelled again: it is as the first cancel left it.
            text = (
                _("Run %(run)s of %(job)s: cancelled before it started")
                if run.started_at is None
                else _("Run %(run)s of %(job)s: cancelled")
            ) % {"run": run.pk, "job": run.job_id}
            result = "cancelled"
        else:
            text = _("Run %(run)s of %(job)s: cancel requested; it is stopped within a few seconds") % {
                "run": run.pk,
                "job": run.job_id,
            }
            result = "cancel requested"
        self._emit(options, {**run_data(run), "job": run.job_id, "result": result}, text)

    def _pause(self, options: dict[str, Any]) -> None:
        self._each(options, control.pause, "paused")

    def _resume(self, options: dict[str, Any]) -> None:
        self._each(options, control.resume, "resumed")

    def _maintenance(self, options: dict[str, Any]) -> None:
        action = options["action"]
        if action == "on":
            if options["reason"] is None:
                raise CommandError(_("maintenance on needs --reason: it is recorded on every skipped run"))
            try:
                control.start_maintenance(options["reason"], f"cli:{getpass.getuser()}", options["until"])
            except validation.InputError as exc:
                raise CommandError(str(exc)) from None
        elif action == "off" and not control.end_maintenance():
            self.stderr.write(_("The scheduler was not paused for maintenance."))
        pause = control.maintenance()
        text = (
            _("The scheduler is %(pause)s.") % {"pause": pause.describe()}
            if pause
            else _("The scheduler is not paused for maintenance.")
        )
        self._emit(options, {"maintenance": maintenance_data(pause)}, text)

    def _calendars(self, options: dict[str, Any]) -> None:
        if options["action"] == "list":
            found = calendar_summaries()
            rows = [
                f"{item.name:<30} {_excludes(item):<30} {item.source:<6} {item.description}" for item in found
            ]
            data = {"calendars": [calendar_data(item) for item in found]}  # as GET /api/calendars/
            self._emit(options, data, "\n".join(rows) or _("No calendars."))
            return
        if not options["name"]:
            raise CommandError(_("calendars show needs the name of a calendar"))
        matches = calendar_summaries(options["name"])
        if not matches:
            raise CommandError(
                _("No calendar named %(name)r; see 'scheduling calendars list'") % {"name": options["name"]}
            )
        item = matches[0]
        zone = check_zone(item.timezone)
        zone_name = item.timezone or _("the site's (%(zone)s)") % {"zone": zone}
        lines = [
            f"{item.name}: {item.description}" if item.description else item.name,
            _("  time zone: %(value)s") % {"value": zone_name},
            _("  source:    %(value)s") % {"value": item.source},
            _("  excludes:  %(value)s") % {"value": _excludes(item)},
            _("  jobs:      %(value)s") % {"value": ", ".join(item.jobs) or _("none")},
        ]
        lines += [f"    {period.describe(zone)}" for period in item.periods]
        self._emit(options, calendar_data(item), "\n".join(lines))

    def _each(self, options: dict[str, Any], act: Any, done: str) -> None:
        unknown = [job_id for job_id in options["job_ids"] if not _exists(job_id)]
        if unknown:
            raise CommandError(
                _("No stored job with id %(jobs)s; nothing was changed")
                % {"jobs": ", ".join(map(repr, unknown))}
            )
        for job_id in options["job_ids"]:
            try:
                act(job_id)
            except control.JobLoadError as exc:
                raise CommandError(str(exc)) from exc
        self._emit(
            options, {"jobs": options["job_ids"], "result": done}, f"{', '.join(options['job_ids'])}: {done}"
        )

    def _status(self, options: dict[str, Any]) -> None:
        status = scheduler_status()
        instance = status.instance
        data = status_data(status)
        if instance:
            text = _(
                "Active scheduler on %(host)s (pid %(pid)s), running since %(since)s, "
                "last heartbeat %(beat)s; %(standbys)s standby(s)."
            ) % {
                "host": instance.hostname,
                "pid": instance.pid,
                "since": format_local(instance.started_at),
                "beat": format_local(instance.last_beat),
                "standbys": status.standbys,
            }
            if instance.changes:
                text += "\n" + _("Changes made elsewhere: %(changes)s.") % {"changes": instance.changes}
        else:
            text = _("No scheduler is running (%(standbys)s standby(s)).") % {"standbys": status.standbys}
        if status.standby_reason:
            text += "\n" + _("A standby could not start scheduling: %(reason)s") % {
                "reason": status.standby_reason
            }
        if status.maintenance:
            text += "\n" + _("Paused for maintenance: %(pause)s; no new runs start.") % {
                "pause": _pause_parts(status.maintenance)
            }
        text += "\n" + _(
            "Jobs: %(scheduled)s scheduled, %(paused)s paused, %(broken)s broken. "
            "Last hour: %(runs)s runs, %(failures)s failed."
        ) % {
            "scheduled": status.scheduled,
            "paused": status.paused,
            "broken": status.broken,
            "runs": status.runs_last_hour,
            "failures": status.failures_last_hour,
        }
        self._emit(options, data, text)
        if not status.alive:
            raise SystemExit(1)

    def _prune(self, options: dict[str, Any]) -> None:
        days = options["older_than_days"]
        deleted = prune(older_than=timedelta(days=days) if days else None)
        self._emit(options, {"deleted": deleted}, _("Deleted %(count)s execution(s).") % {"count": deleted})

    def _export(self, options: dict[str, Any]) -> None:
        try:
            self.stdout.write(document.dumps(export_document(), options["format"]), ending="")
        except document.DocumentError as exc:
            raise CommandError(str(exc)) from None

    def _import(self, options: dict[str, Any]) -> None:
        user = _user(options["user"])
        try:
            changes = import_document(
                document.load(options["path"]), user, prune=options["prune"], dry_run=options["dry_run"]
            )
        except (document.DocumentError, ImportRefusedError) as exc:
            raise CommandError(_("%(error)s; nothing was changed") % {"error": exc}) from None
        for change in changes:
            target = self.stderr if change.kind == "skipped" else self.stdout
            target.write(change.line())
        self.stdout.write(_import_summary(changes, options["dry_run"], user.get_username()))

    def _token(self, options: dict[str, Any]) -> None:
        getattr(self, f"_token_{options['token_command']}")(options)

    def _token_create(self, options: dict[str, Any]) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(_("No user named %(name)r") % {"name": options["username"]}) from None
        try:
            token, key = tokens.create(user, options["name"])
        except tokens.TokenError as exc:
            raise CommandError(str(exc)) from None
        self._emit(
            options,
            {"name": token.name, "user": user.get_username(), "key": key},
            _(
                "API token %(name)r for %(user)s:\n%(key)s\n"
                "Copy it now: it is not stored and cannot be shown again."
            )
            % {"name": token.name, "user": user.get_username(), "key": key},
        )

    def _token_list(self, options: dict[str, Any]) -> None:
        rows = ApiToken.objects.select_related("user")
        data = [
            {
                "name": row.name,
                "user": row.user.get_username(),
                "prefix": row.prefix,
                "created_at": iso(row.created_at),
                "last_used_at": iso(row.last_used_at),
            }
            for row in rows
        ]
        text = "\n".join(
            f"{row['prefix']}…  {row['user']:<20} {row['name']:<30} "
            + _("last used: %(time)s") % {"time": row["last_used_at"] or "-"}
            for row in data
        )
        self._emit(options, data, text or _("No API tokens."))

    def _token_revoke(self, options: dict[str, Any]) -> None:
        matches = ApiToken.objects.filter(prefix__startswith=options["prefix"])
        if len(options["prefix"]) < len(tokens.KEY_PREFIX) + 2 or matches.count() != 1:
            raise CommandError(
                _(
                    "%(prefix)r must be the start of exactly one token's key (%(count)s match); "
                    "see 'scheduling token list'"
                )
                % {"prefix": options["prefix"], "count": matches.count()}
            )
        token = matches.get()
        token.delete()
        self._emit(
            options, {"revoked": token.prefix}, _("Revoked the API token %(token)s.") % {"token": token}
        )


def _user(username: str) -> Any:
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(_("No user named %(name)r; nothing was changed") % {"name": username}) from None
    if not user.is_active:
        raise CommandError(_("User %(name)r is not active; nothing was changed") % {"name": username})
    return user


def _import_summary(changes: list[Change], dry_run: bool, username: str) -> str:
    """ "2 added, 1 changed, 1 paused, 0 resumed, 0 removed, 1 skipped": counts in a fixed order."""
    kinds = ("added", "changed", "replaced", "paused", "resumed", "removed", "skipped")
    counts = ", ".join(
        _("%(count)s %(kind)s")
        % {"count": sum(change.kind == kind for change in changes), "kind": kind_word(kind)}
        for kind in kinds
    )
    if dry_run:
        return _("Dry run: %(counts)s; nothing was written.") % {"counts": counts}
    return _("Imported as %(user)s: %(counts)s.") % {"user": username, "counts": counts}


def _excludes(calendar: CalendarSummary) -> str:
    """weekends, 3 days, 1 range"""
    days = sum(period.day is not None for period in calendar.periods)
    parts = [_("weekends")] if calendar.weekdays_only else []
    if days:
        parts.append(ngettext("%(count)d day", "%(count)d days", days) % {"count": days})
    if ranges := len(calendar.periods) - days:
        parts.append(ngettext("%(count)d range", "%(count)d ranges", ranges) % {"count": ranges})
    return ", ".join(parts) or _("nothing")


def _pause_parts(pause: Maintenance) -> str:
    """reason, by, until: the pause as the status line reads it."""
    parts = [pause.reason, _("by %(who)s") % {"who": pause.by or _("a script")}]
    parts.append(
        _("until %(time)s") % {"time": format_local(pause.until)} if pause.until else _("until lifted")
    )
    return ", ".join(parts)


def _exists(job_id: str) -> bool:
    return DjangoJob.objects.filter(id=job_id).exists()


def _runs_text(runs: list[Run]) -> str:
    if not runs:
        return _("No runs.")
    text = "\n".join(run.line() for run in runs)
    if any(run.moved_by_clock_change for run in runs):
        text += "\n" + _("* moved by a clock change")
    return text
