"""Write ``rows_8f7a4ae.json``: the rows the code of commit 8f7a4ae stores, for the upgrade test.

Run once, against a checkout of 8f7a4ae (the last version before the regroup of issue #14), with
this package copied into it and a fresh SQLite database::

    DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL=sqlite:///rows.sqlite3 \
        python -m tests.support.upgrade.make_rows_8f7a4ae tests/support/upgrade/rows_8f7a4ae.json

Do not run it on newer code: the fixture is worth something only because older code wrote it.
It imports that version's modules (``scheduling.dispatch``, ``scheduling.executors``,
``scheduling.history``), which later versions moved.

It stores one job of each kind a site can have -- declared in code (the built-in
``scheduling.prune_history``; crontab, cron fields, interval and date schedules; in threads, the
process pool and task workers; with arguments), added outside the code (an operator's job,
paused), and one with the wall-clock cron trigger of earlier versions -- and fires the task
workers' job once, so a task waits in django-tasks-db's queue as the scheduler enqueued it.
Next to the rows, it writes what that code computed: the next fire times of every job, from its
stored next run time and from a fixed moment before a clock change.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import django

django.setup()

from apscheduler.job import Job  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402
from django.core import serializers  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402
from django_apscheduler.models import DjangoJob  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402

from scheduling import control, declarations  # noqa: E402
from scheduling.models import Execution, ScheduledJob  # noqa: E402
from scheduling.schedules import WallClockCronTrigger, job_zone  # noqa: E402
from scheduling.store import JobStore  # noqa: E402
from scheduling.sync import sync  # noqa: E402
from tests.support.upgrade import jobs  # noqa: E402

COMMIT = "8f7a4ae"
# Before the clocks go forward in Europe (28 March 2027, 01:00 UTC), so the fires computed
# from it cross a clock change.
FIXED_NOW = dt.datetime(2027, 3, 27, 22, 0, tzinfo=dt.UTC)
FIRES = 3


def add_outside_the_code(store: JobStore) -> None:
    """An operator's job (paused), and one stored with the cron trigger of earlier versions."""
    control.add(
        "upgrade.external", "tests.support.upgrade.jobs:note", schedule={"cron": "0 6 * * 1"}, args=["x"]
    )
    control.pause("upgrade.external")
    trigger = WallClockCronTrigger(hour=2, minute=30, timezone=job_zone("Europe/Berlin"))
    old = Job(
        None,
        id="upgrade.wall_clock",
        func="tests.support.upgrade.jobs:note",
        trigger=trigger,
        executor="default",
        args=(),
        kwargs={},
        name="Wall clock",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=60,
    )
    old.next_run_time = trigger.get_next_fire_time(None, timezone.now())
    store.add_job(old)
    ScheduledJob.objects.create(
        id="upgrade.wall_clock", source=ScheduledJob.Source.EXTERNAL, func_ref=old.func_ref, name=old.name
    )


def enqueue_one_task(store: JobStore) -> None:
    """Fire the task workers' job once, as the scheduler of that version does."""
    # Named by string: these modules exist in that version only (the regroup moved them).
    recorder = import_string("scheduling.history.Recorder")()
    pool = import_string("scheduling.executors.RecordingThreadPoolExecutor")(recorder, max_workers=1)
    dispatcher = import_string("scheduling.dispatch.Dispatcher")
    stored = store.lookup_job("upgrade.tasks")
    stored.next_run_time -= dt.timedelta(seconds=31)
    store.update_job(stored)
    now = timezone.now()
    due, _ = store.get_due_jobs_and_next_run_time(now, limit=100)
    pool.start(BackgroundScheduler(), "default")
    try:
        dispatcher(store, pool, recorder).dispatch(
            [due_job for due_job in due if due_job.id == "upgrade.tasks"], now
        )
    finally:
        pool.shutdown()


def chain(trigger: object, first: dt.datetime | None) -> list[str | None]:
    fires: list[str | None] = []
    fire = first
    while len(fires) < FIRES:
        fires.append(fire.isoformat() if fire else None)
        fire = trigger.get_next_fire_time(fire, fire) if fire else None  # type: ignore[attr-defined]
    return fires


def computed(store: JobStore) -> dict[str, dict[str, list[str | None]]]:
    return {
        stored.id: {
            "from_next_run_time": chain(stored.trigger, stored.next_run_time),
            "from_fixed_now": chain(stored.trigger, stored.trigger.get_next_fire_time(None, FIXED_NOW)),
        }
        for stored in store.get_all_jobs()
    }


def rows(model: type) -> list[object]:
    return json.loads(serializers.serialize("json", model.objects.order_by("pk")))  # type: ignore[attr-defined]


def main(output: Path) -> None:
    call_command("migrate", verbosity=0)
    store = JobStore()
    jobs.declare()
    sync(store, declarations.registry.values())
    add_outside_the_code(store)
    enqueue_one_task(store)
    fixture = {
        "commit": COMMIT,
        "written_at": timezone.now().isoformat(),
        "fixed_now": FIXED_NOW.isoformat(),
        "fires": computed(store),
        "declared": sorted(declarations.registry),
        "rows": rows(DjangoJob) + rows(ScheduledJob) + rows(Execution) + rows(DBTaskResult),
    }
    output.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
