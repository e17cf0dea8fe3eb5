"""Jobs stored with the cron rule of earlier versions: do they mean something else today?

Before the crontab rule (``scheduling.crontab``), cron schedules were stored as APScheduler's
CronTrigger or our ``WallClockCronTrigger``: both days had to match, and clock changes were
handled differently. Such a job keeps its pickled meaning until it is edited or reset -- nothing
is rewritten behind the operator's back -- and the admin flags it when the two meanings give
different fire times: over the next five weeks, and around each clock change of the coming year.
"""

from __future__ import annotations

import copy
import datetime as dt

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling.crontab import CrontabTrigger, first_offset_change, offset_at
from scheduling.schedules import ScheduleError, build_trigger, spec_of

NEAR = dt.timedelta(days=35)
AHEAD = dt.timedelta(days=400)
AROUND_CHANGE = dt.timedelta(hours=3)
MAX_FIRES = 200  # an every-second job needs no more to show a difference


def old_meaning(trigger: BaseTrigger, now: dt.datetime | None = None) -> str | None:
    """Why an old-style cron trigger runs differently from the same schedule saved today, or None."""
    if not isinstance(trigger, CronTrigger) or isinstance(trigger, CrontabTrigger):
        return None
    try:
        current = build_trigger(spec_of(trigger))
    except ScheduleError:
        return None  # a field combination an edit could not express; nothing to compare with
    old = copy.copy(trigger)
    old.jitter = current.jitter = None  # compare the slots, not random delays
    now = now or timezone.now()
    for start, end in [(now, now + NEAR), *_around_changes(trigger.timezone, now)]:
        before, after = _fires(old, start, end), _fires(current, start, end)
        if before != after:
            first = next((a for a, b in zip(before, after, strict=False) if a != b), (before + after)[0])
            return str(
                _(
                    "Stored with the cron rule of an earlier version, which gives other run times "
                    "for this schedule (%(where)s). It keeps that meaning until the job is edited or "
                    "reset; saving it applies crontab's rule."
                )
                % {"where": _where(trigger, first)}
            )
    return None


def _where(trigger: CronTrigger, first: dt.datetime) -> str:
    fields = {field.name: field for field in trigger.fields}
    day, weekday = fields["day"], fields["day_of_week"]
    if not (day.is_default or weekday.is_default or str(day).startswith("*") or str(weekday).startswith("*")):
        return str(_("both day-of-month and weekday had to match; crontab runs when either does"))
    return str(
        _("first on %(day)s, a clock change") % {"day": f"{first.astimezone(trigger.timezone):%Y-%m-%d}"}
    )


def _around_changes(zone: dt.tzinfo, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    windows = []
    moment, end = now, now + AHEAD
    while (change := first_offset_change(zone, moment, end, offset_at(zone, moment))) is not None:
        windows.append((change - AROUND_CHANGE, change + AROUND_CHANGE))
        moment = change
    return windows


def _fires(trigger: BaseTrigger, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    fires: list[dt.datetime] = []
    previous = None
    while len(fires) < MAX_FIRES:
        # APScheduler's CronTrigger searches from min(now, previous): "now" moves with the fires.
        moment = trigger.get_next_fire_time(previous, previous or start)
        if moment is None or moment > end or (previous is not None and moment <= previous):
            break
        fires.append(moment.astimezone(dt.UTC))
        previous = moment
    return fires
