"""Jobs for runscheduler processes started by tests (named in SCHEDULING_TEST_MODULES)."""

import os

from scheduling import job
from tests.support import jobs

job(
    interval={"seconds": 1},
    id="proc.slow",
    args=[float(os.environ.get("TEST_SLOW_SECONDS", "3"))],
    misfire_grace_time=None,
)(jobs.sleep)
