"""Jobs placed in task workers, for the scaling-out test (TEST_JOB_COUNT, TEST_MARK_FILE)."""

import os

from scheduling import job
from tests.support import jobs

for number in range(int(os.environ.get("TEST_JOB_COUNT", "20"))):
    job_id = f"spread.{number}"
    # Room for a backlog: on a busy machine the workers may fall a few runs behind, and a run
    # still enqueued when its job fires again would make that fire "skipped" with max_instances 1.
    job(
        interval={"seconds": 1},
        id=job_id,
        runs_in="tasks",
        args=[job_id, os.environ["TEST_MARK_FILE"]],
        max_instances=10,
    )(jobs.mark_process)

job(interval={"seconds": 2}, id="spread.fails", runs_in="tasks")(jobs.fail)
job(interval={"hours": 1}, id="spread.slow", runs_in="tasks", task_queue="reports", args=[120])(jobs.sleep)
