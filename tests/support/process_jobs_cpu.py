"""A CPU-bound job in the process pool next to a punctual one in threads (TEST_BURN_COUNT)."""

import os

from scheduling import job
from tests.support import jobs

job(interval={"seconds": 1}, id="cpu.tick")(jobs.succeed)
job(
    interval={"seconds": 1},
    id="cpu.burn",
    runs_in="processes",
    args=[int(os.environ.get("TEST_BURN_COUNT", "200000000"))],
)(jobs.hold_gil)
