"""A long run in the process pool that writes its process id to TEST_PID_FILE."""

import os

from scheduling import job
from tests.support import jobs

job(interval={"seconds": 1}, id="pool.stuck", runs_in="processes", args=[os.environ["TEST_PID_FILE"], 120])(
    jobs.note_and_sleep
)
