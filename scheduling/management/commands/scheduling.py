"""Operate the scheduler from a shell or a script: list, show, run, pause, resume, status, prune.

Like the admin, it only writes intent; the running scheduler acts on it. Every subcommand takes
``--json`` for scripts; an unknown job id exits with status 1 and says so.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django_apscheduler.models import DjangoJob

from scheduling import control, history
from scheduling.models import Execution
from scheduling.schedules import format_local
from scheduling.status import JobSummary, job_summaries, scheduler_status


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number >= 1")
    return int(value)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class Command(BaseCommand):
    help = "List and operate scheduled jobs: list, show, run, pause, resume, status, prune."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def subcommand(name: str, text: str) -> argparse.ArgumentParser:
            sub = commands.add_parser(name, help=text, description=text)
            sub.add_argument("--json", action="store_true", help="Print JSON for scripts.")
            return sub

        subcommand("list", "Every job with its schedule, next run and state.")
        show = subcommand("show", "One job and its recent runs.")
        show.add_argument("job_id")
        show.add_argument("--runs", type=positive_int, default=10, help="How many recent runs (default 10).")
        for name, text in (
            ("run", "Ask the running scheduler to run jobs now."),
            ("pause", "Pause jobs."),
            ("resume", "Resume paused jobs."),
        ):
            subcommand(name, text).add_argument("job_ids", nargs="+", metavar="job_id")
        subcommand("status", "Is a scheduler active? Exits with status 1 when none is.")
        prune = subcommand("prune", "Delete old execution history now.")
        prune.add_argument(
            "--older-than-days", type=positive_int, help="Default: SCHEDULING_HISTORY_RETENTION."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['subcommand']}")(options)

    def _emit(self, options: dict[str, Any], data: Any, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2) if options["json"] else text)

    def _list(self, options: dict[str, Any]) -> None:
        jobs = job_summaries()
        rows = [
            f"{job.id:<40} {job.schedule:<40} {format_local(job.next_run):<25} {job.state}" for job in jobs
        ]
        data = [_job_data(job) for job in jobs]
        self._emit(options, data, "\n".join(rows) or "No jobs.")

    def _show(self, options: dict[str, Any]) -> None:
        job = next((job for job in job_summaries() if job.id == options["job_id"]), None)
        if job is None:
            raise CommandError(f"No stored job with id {options['job_id']!r}")
        runs = list(Execution.objects.filter(job_id=job.id)[: options["runs"]])
        data = {**_job_data(job), "runs": [_run_data(run) for run in runs]}
        lines = [
            f"{job.id}: {job.name}",
            f"  function: {job.function}",
            f"  schedule: {job.schedule}",
            f"  next run: {format_local(job.next_run)}",
            f"  state:    {job.state}",
            "  recent runs:" if runs else "  no runs yet",
        ]
        for run in runs:
            duration = "-" if run.duration is None else f"{run.duration:.3f} s"
            lines.append(
                f"    {format_local(run.scheduled_at)}  {run.status:<11} {duration:>10}  {run.exception[:80]}"
            )
        self._emit(options, data, "\n".join(lines))

    def _run(self, options: dict[str, Any]) -> None:
        user = f"cli:{getpass.getuser()}"
        self._each(options, lambda job_id: control.run_now(job_id, requested_by=user), "run requested")
        if not scheduler_status().alive:
            self.stderr.write("No scheduler is running: the runs start when 'manage.py runscheduler' does.")

    def _pause(self, options: dict[str, Any]) -> None:
        self._each(options, control.pause, "paused")

    def _resume(self, options: dict[str, Any]) -> None:
        self._each(options, control.resume, "resumed")

    def _each(self, options: dict[str, Any], act: Any, done: str) -> None:
        unknown = [job_id for job_id in options["job_ids"] if not _exists(job_id)]
        if unknown:
            raise CommandError(f"No stored job with id {', '.join(map(repr, unknown))}; nothing was changed")
        for job_id in options["job_ids"]:
            act(job_id)
        self._emit(
            options, {"jobs": options["job_ids"], "result": done}, f"{', '.join(options['job_ids'])}: {done}"
        )

    def _status(self, options: dict[str, Any]) -> None:
        status = scheduler_status()
        instance = status.instance
        data = {
            "alive": status.alive,
            "host": instance.hostname if instance else None,
            "pid": instance.pid if instance else None,
            "running_since": iso(instance.started_at) if instance else None,
            "last_beat": iso(instance.last_beat) if instance else None,
            "standbys": status.standbys,
            "jobs": {"scheduled": status.scheduled, "paused": status.paused, "broken": status.broken},
            "last_hour": {"runs": status.runs_last_hour, "failures": status.failures_last_hour},
        }
        if instance:
            text = (
                f"Active scheduler on {instance.hostname} (pid {instance.pid}), running since "
                f"{format_local(instance.started_at)}, last heartbeat {format_local(instance.last_beat)}; "
                f"{status.standbys} standby(s)."
            )
        else:
            text = f"No scheduler is running ({status.standbys} standby(s))."
        text += (
            f"\nJobs: {status.scheduled} scheduled, {status.paused} paused, {status.broken} broken. "
            f"Last hour: {status.runs_last_hour} runs, {status.failures_last_hour} failed."
        )
        self._emit(options, data, text)
        if not status.alive:
            raise SystemExit(1)

    def _prune(self, options: dict[str, Any]) -> None:
        days = options["older_than_days"]
        deleted = history.prune(older_than=timedelta(days=days) if days else None)
        self._emit(options, {"deleted": deleted}, f"Deleted {deleted} execution(s).")


def _exists(job_id: str) -> bool:
    return DjangoJob.objects.filter(id=job_id).exists()


def _job_data(job: JobSummary) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "function": job.function,
        "schedule": job.schedule,
        "next_run": iso(job.next_run),
        "state": job.state,
    }


def _run_data(run: Execution) -> dict[str, Any]:
    return {
        "scheduled_at": iso(run.scheduled_at),
        "status": run.status,
        "duration": run.duration,
        "origin": run.origin,
        "requested_by": run.requested_by,
        "exception": run.exception,
    }
