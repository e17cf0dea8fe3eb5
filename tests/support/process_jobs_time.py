"""Jobs for the clock-change process test: a zone compiled by the test (TEST_TIME_ZONE, found
through PYTHONTZPATH) whose clocks go back during the run."""

import os

from scheduling import job
from tests.support import jobs

ZONE = os.environ["TEST_TIME_ZONE"]

# Slots every 5 s of elapsed time, each run up to 4 s late: the pattern that went backwards. No
# coalescing, so a fire time that went backwards would show as a second run in an earlier slot.
job(
    cron={"second": "*/5"},
    timezone=ZONE,
    jitter=4,
    id="time.jitter",
    coalesce=False,
    misfire_grace_time=None,
)(jobs.succeed)
job(interval={"seconds": 1}, timezone=ZONE, id="time.heartbeat", misfire_grace_time=None)(jobs.succeed)
