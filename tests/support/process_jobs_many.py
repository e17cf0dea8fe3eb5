"""Many every-second jobs that leave a trace of each run (TEST_JOB_COUNT, TEST_MARK_FILE)."""

import os

from scheduling import job
from tests.support import jobs

for number in range(int(os.environ.get("TEST_JOB_COUNT", "50"))):
    job_id = f"many.{number}"
    job(interval={"seconds": 1}, id=job_id, args=[job_id, os.environ["TEST_MARK_FILE"]])(jobs.mark)
