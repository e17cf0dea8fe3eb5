"""The ending shared by the tests that spread fires over real task workers (django-tasks-db, RQ,
Celery): stop the fires, wait for every run to end, and check what every row says."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from scheduling import control
from scheduling.models import Execution
from tests.conftest import wait_for


def settle(job_ids: list[str], failing: str) -> list[dict[str, Any]]:
    """Pause ``job_ids`` and the ``failing`` job, wait until none of their runs is enqueued or
    running, and return the rows of ``job_ids``' runs, each checked: succeeded, run in task
    workers on this host, one task per fire."""
    for job_id in [*job_ids, failing]:
        control.pause(job_id)
    for runs in (Execution.objects.filter(job_id__in=job_ids), Execution.objects.filter(job_id=failing)):
        unfinished = runs.filter(status__in=["enqueued", "running"])
        wait_for(lambda: not unfinished.exists(), timeout=60)  # noqa: B023  # called within the iteration
    fields = ("job_id", "scheduled_at", "status", "hostname", "pid", "task_id", "ran_in")
    rows = [dict(row) for row in Execution.objects.filter(job_id__in=job_ids).values(*fields)]
    assert Counter(row["status"] for row in rows) == {"succeeded": len(rows)}
    assert {row["ran_in"] for row in rows} == {"tasks"}
    assert {row["hostname"] for row in rows} == {socket.gethostname()}
    assert all(row["task_id"] for row in rows)
    assert len({row["task_id"] for row in rows}) == len(rows)  # one task per fire
    return rows
