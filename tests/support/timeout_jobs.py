"""Jobs that must be stopped, for the timeout and cancel tests with real processes (TEST_NOTES_DIR)."""

import os

from scheduling import job
from tests.support import jobs

NOTES = os.environ.get("TEST_NOTES_DIR", "/nonexistent")

# Never fired by the schedule in a test (hourly): each is run now by the test.
job(interval={"hours": 1}, id="stop.pool", runs_in="processes", timeout=5, args=[f"{NOTES}/pool", 120])(
    jobs.ignore_sigterm_and_sleep
)
job(interval={"hours": 1}, id="stop.thread", args=[f"{NOTES}/thread"])(jobs.stop_when_cancelled)
job(interval={"hours": 1}, id="stop.worker", runs_in="tasks", timeout=5, args=[f"{NOTES}/worker", 120])(
    jobs.ignore_sigterm_and_sleep
)
job(interval={"hours": 1}, id="stop.worker-cooperative", runs_in="tasks", args=[f"{NOTES}/cooperative"])(
    jobs.stop_when_cancelled
)
