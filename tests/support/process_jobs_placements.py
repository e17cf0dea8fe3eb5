"""Jobs placed on the RQ or Celery workers of tests/test_placements.py.

TEST_JOB_COUNT jobs every second on the test's own queue (SCHEDULING_TEST_TASK_QUEUE), each fire
marked in TEST_MARK_FILE with the process that ran it; a failing job; and a slow one to kill.
"""

import os

from scheduling import job
from tests.support import jobs

QUEUE = os.environ["SCHEDULING_TEST_TASK_QUEUE"]

for number in range(int(os.environ.get("TEST_JOB_COUNT", "20"))):
    job_id = f"placed.{number}"
    # Room for a backlog, as in process_jobs_tasks: a run still queued would make the next fire skipped.
    job(
        interval={"seconds": 1},
        id=job_id,
        runs_in="tasks",
        task_backend="placed",
        task_queue=QUEUE,
        args=[job_id, os.environ["TEST_MARK_FILE"]],
        max_instances=10,
    )(jobs.mark_process_and_parent)

job(interval={"seconds": 2}, id="placed.fails", runs_in="tasks", task_backend="placed", task_queue=QUEUE)(
    jobs.fail
)
job(
    interval={"hours": 1},
    id="placed.slow",
    runs_in="tasks",
    task_backend="placed",
    task_queue=QUEUE,
    args=[120],
)(jobs.sleep)
