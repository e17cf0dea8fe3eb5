"""A slow job in the process pool leaving a side effect when it ends (TEST_NOTE_DIR, TEST_SLOW_SECONDS)."""

import os

from scheduling import job
from tests.support import jobs

notes = os.environ["TEST_NOTE_DIR"]
job(
    interval={"seconds": 1},
    id="pool.slow",
    runs_in="processes",
    args=[f"{notes}/started", f"{notes}/finished", float(os.environ.get("TEST_SLOW_SECONDS", "8"))],
)(jobs.sleep_then_write)
