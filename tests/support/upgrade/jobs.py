"""The functions the jobs of the upgrade fixture call.

Their paths are pickled in ``rows_8f7a4ae.json``: moving or renaming one breaks the fixture, as
it would break a site's stored jobs.
"""

from __future__ import annotations

from typing import Any

from scheduling import current_run, job

calls: list[str] = []


def note(*args: Any, **kwargs: Any) -> None:
    """Leave a trace of the run: the job id and the arguments it was stored with."""
    run = current_run()
    calls.append(f"{run.job_id if run else '-'} {list(args)} {sorted(kwargs.items())}")


def crunch(count: int) -> int:
    """CPU-bound work, for the job placed in the process pool."""
    return sum(range(count))


def declare() -> None:
    """Declare the fixture's jobs in code: one per schedule kind and placement, some with arguments.

    Called by the script that wrote the fixture (on that version's ``@job``) and by the upgrade
    test (on today's), so both see the same declarations.
    """
    job(
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        id="upgrade.crontab",
        args=(1, "two"),
        kwargs={"three": 3},
    )(note)
    job(cron={"minute": "*/15", "hour": "8-18"}, id="upgrade.cron_fields", name="Cron fields")(note)
    job(interval={"minutes": 5}, id="upgrade.interval", misfire_grace_time=None, coalesce=False)(note)
    job(date="2031-06-01T09:00:00", timezone="Europe/Paris", id="upgrade.date")(note)
    job(interval=60, id="upgrade.processes", runs_in="processes", args=(1000,))(crunch)
    job(interval=30, id="upgrade.tasks", runs_in="tasks", task_queue="reports", kwargs={"via": "tasks"})(note)
