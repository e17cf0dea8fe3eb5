"""The next runs of a trigger, each with what a clock change did to it, for people and scripts.

One list for the CLI (``scheduling preview``, ``scheduling show --next``), the admin's job page
and the API's job detail. Runs are the slots the schedule defines; jitter is described (and its
cap), not drawn, so the list is the same every time it is asked for. Fires a job's exclusion
calendars skip are left out, and the next run listed says which were skipped and why.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from django.db.models import JSONField, OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _
from django_apscheduler.models import DjangoJob

from scheduling.calendars import CalendarRule, exclusion
from scheduling.crontab import CrontabTrigger, is_ambiguous, resolve_wall_time
from scheduling.dates import LocalDateTrigger
from scheduling.interval import ElapsedIntervalTrigger
from scheduling.models import ScheduledJob
from scheduling.policy import RunPolicy
from scheduling.schedules import ScheduleError, build_trigger, job_zone
from scheduling.store import calendar_rules, unpickle

logger = logging.getLogger(__name__)
UTC = dt.UTC
MAX_SCANNED = 1000  # fires looked at to find the next runs outside a job's calendars
SKIPS_LISTED = 3  # skipped fires one run's note names; more are counted


@dataclass(frozen=True)
class Run:
    at: dt.datetime
    moved_by_clock_change: bool = False
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "utc": self.at.astimezone(UTC).isoformat(),
            "moved_by_clock_change": self.moved_by_clock_change,
            "note": self.note,
        }

    def when(self) -> str:
        """``2026-10-25 02:30:00 +02:00 CEST``: the job's wall clock and its UTC offset."""
        offset = self.at.strftime("%z")
        return f"{self.at:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]} {self.at.tzname()}"

    def line(self) -> str:
        """``2026-10-25 02:30:00 +02:00 CEST  *  02:30 — clocks go back; runs once``"""
        text = self.when()
        if self.note:
            text += ("  *  " if self.moved_by_clock_change else "     ") + self.note
        return text


def next_runs(trigger: BaseTrigger, count: int, after: dt.datetime | None = None) -> list[Run]:
    """Up to ``count`` runs after ``after`` (default: now), in the trigger's time zone."""
    after = after or timezone.now()
    if isinstance(trigger, CrontabTrigger):
        return _crontab_runs(trigger, count, after)
    if isinstance(trigger, ElapsedIntervalTrigger):
        return _interval_runs(trigger, count, after)
    if isinstance(trigger, DateTrigger):
        return _date_runs(trigger, after)
    return _plain_runs(trigger, count, after)


def _crontab_runs(trigger: CrontabTrigger, count: int, after: dt.datetime) -> list[Run]:
    runs: list[Run] = []
    cursor = after - dt.timedelta(microseconds=1)
    while len(runs) < count:
        slot = trigger.next_slot(cursor)
        if slot is None:
            break
        notes, moved = [], False
        wall = slot.at.replace(tzinfo=None)
        if trigger.wall_clock and slot.wall != wall:
            moved = True
            notes.append(
                _("%(wall)s does not exist — clocks go forward; runs at %(at)s")
                % {"wall": f"{slot.wall:%H:%M}", "at": f"{slot.at:%H:%M %Z}"}
            )
        elif trigger.wall_clock and is_ambiguous(slot.wall, trigger.timezone):
            moved = True
            notes.append(_("%(wall)s — clocks go back; runs once") % {"wall": f"{slot.wall:%H:%M}"})
        elif is_ambiguous(wall, trigger.timezone):
            notes.append(
                _("%(wall)s happens twice — clocks go back; runs in both (elapsed time)")
                % {"wall": f"{wall:%H:%M}"}
            )
        notes += _jitter_notes(trigger.jitter, trigger.jitter_window(slot.at))
        runs.append(Run(slot.at, moved, "; ".join(notes) or None))
        cursor = slot.at
    return runs


def _interval_runs(trigger: ElapsedIntervalTrigger, count: int, after: dt.datetime) -> list[Run]:
    runs: list[Run] = []
    slot = trigger.next_slot(after, inclusive=True)
    while slot is not None and len(runs) < count:
        local = slot.astimezone(trigger.timezone)
        notes = []
        if is_ambiguous(local.replace(tzinfo=None), trigger.timezone):
            notes.append(
                _("%(wall)s happens twice — clocks go back; intervals count elapsed time")
                % {"wall": f"{local:%H:%M}"}
            )
        notes += _jitter_notes(trigger.jitter, trigger.jitter_window())
        runs.append(Run(local, False, "; ".join(notes) or None))
        slot = trigger.next_slot(slot)
    return runs


def _date_runs(trigger: DateTrigger, after: dt.datetime) -> list[Run]:
    moment = trigger.run_date
    if moment < after:
        return []
    if not isinstance(trigger, LocalDateTrigger):
        return [Run(moment)]
    wall = trigger.wall
    if wall != moment.replace(tzinfo=None):
        note = _("%(wall)s does not exist — clocks go forward; runs at %(at)s") % {
            "wall": f"{wall:%Y-%m-%d %H:%M}",
            "at": f"{moment:%H:%M %Z}",
        }
        return [Run(moment, True, note)]
    if is_ambiguous(wall, trigger.zone):
        note = _("%(wall)s happens twice — clocks go back; runs at the first, %(at)s") % {
            "wall": f"{wall:%Y-%m-%d %H:%M}",
            "at": f"{moment:%H:%M %Z}",
        }
        return [Run(moment, True, note)]
    return [Run(moment)]


def _plain_runs(trigger: BaseTrigger, count: int, after: dt.datetime) -> list[Run]:
    """Triggers of other kinds (and of earlier versions, stored before the crontab rule)."""
    runs: list[Run] = []
    previous = None
    now = after
    while len(runs) < count:
        moment = trigger.get_next_fire_time(previous, now)
        if moment is None or (previous is not None and moment <= previous):
            break
        runs.append(Run(moment))
        previous = now = moment
    return runs


def _jitter_notes(jitter: int | None, window: float) -> list[str]:
    if not jitter:
        return []
    if window < jitter:
        return [
            _("jitter capped to %(window)s s (of %(jitter)s s) to end before the next run")
            % {"window": f"{window:.0f}", "jitter": jitter}
        ]
    return []


def preview_schedule(spec: dict[str, Any], count: int, start: dt.datetime | str | None = None) -> list[Run]:
    """The runs of a schedule spec from ``start`` (ISO 8601; without an offset, read in the spec's zone).

    Raises ScheduleError naming what is wrong. An interval's first run comes one interval after
    ``start``, as when a job is added.
    """
    trigger = build_trigger(spec)
    moment = _start(start, getattr(trigger, "timezone", None) or job_zone(spec.get("timezone")))
    if isinstance(trigger, ElapsedIntervalTrigger):
        trigger.start_date = moment + trigger.interval
    return next_runs(trigger, count, moment)


def job_runs(
    trigger: BaseTrigger, count: int, calendars: Collection[str] = (), after: dt.datetime | None = None
) -> list[Run]:
    """A job's next runs: :func:`next_runs` without the fires its ``calendars`` exclude (one
    query reads them, only when there are any)."""
    if not calendars:
        return next_runs(trigger, count, after)
    found = calendar_rules(calendars)
    return runs_outside(trigger, count, [found[name] for name in calendars if name in found], after)


def runs_outside(
    trigger: BaseTrigger, count: int, rules: list[CalendarRule], after: dt.datetime | None = None
) -> list[Run]:
    """Up to ``count`` runs that no rule excludes, looking at MAX_SCANNED fires at most; each
    run's note names the fires skipped since the run before it (``skips 2026-12-24 09:00:
    calendar "Holidays DE" (Christmas Eve)``)."""
    cursor = after or timezone.now()
    kept: list[Run] = []
    skipped: list[str] = []
    scanned = 0
    while len(kept) < count and scanned < MAX_SCANNED:
        batch = next_runs(trigger, min(count, MAX_SCANNED - scanned), cursor)
        for run in batch:
            if (found := exclusion(run.at, rules)) is not None:
                skipped.append(
                    _("skips %(when)s: %(why)s") % {"when": f"{run.at:%Y-%m-%d %H:%M}", "why": found.text}
                )
                continue
            kept.append(_with_skips(run, skipped))
            skipped = []
            if len(kept) == count:
                break
        if not batch or isinstance(trigger, DateTrigger):
            break
        scanned += len(batch)
        cursor = batch[-1].at + dt.timedelta(microseconds=1)
    return kept


def _with_skips(run: Run, skipped: list[str]) -> Run:
    if not skipped:
        return run
    notes = skipped[:SKIPS_LISTED]
    if len(skipped) > SKIPS_LISTED:
        notes.append(_("and %(count)s more skipped") % {"count": len(skipped) - SKIPS_LISTED})
    if run.note:
        notes.append(run.note)
    return replace(run, note="; ".join(notes))


def stored_job_runs(job_id: str, count: int, after: dt.datetime | None = None) -> list[Run]:
    """A stored job's next runs (none when paused, finished or unreadable), without importing it."""
    policy = ScheduledJob.objects.filter(id=OuterRef("id")).values("run_policy")[:1]
    row = (
        DjangoJob.objects.filter(id=job_id)
        .annotate(policy=Subquery(policy, output_field=JSONField()))
        .only("next_run_time", "job_state")
        .first()
    )
    if row is None or row.next_run_time is None:
        return []
    try:
        trigger = unpickle(row.job_state)["trigger"]
    except Exception:  # a state that cannot be read is the broken-job flag's business, not the preview's
        logger.debug("Job %s: its state cannot be read; no preview", job_id)
        return []
    return job_runs(trigger, count, RunPolicy.from_stored(row.policy).calendars, after)


def _start(value: dt.datetime | str | None, zone: dt.tzinfo) -> dt.datetime:
    if value is None:
        return timezone.now()
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleError(f"start {value!r} is not an ISO 8601 date and time") from None
    return resolve_wall_time(value, zone) if timezone.is_naive(value) else value
