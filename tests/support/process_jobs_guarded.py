"""The job a db_worker subprocess knows, for the forged-task test (TEST_NOTES_FILE)."""

import os

from scheduling import job
from tests.support import jobs

job(interval=30, id="guarded", runs_in="tasks", args=[os.environ["TEST_NOTES_FILE"]])(jobs.note_process)
