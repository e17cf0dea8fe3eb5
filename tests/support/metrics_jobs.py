"""Jobs for the metrics test's runscheduler: a success and a failure each second, in threads and
in the process pool, so the figures come from more than one process."""

from scheduling import job
from tests.support import jobs

job(interval={"seconds": 1}, id="metrics.ok")(jobs.succeed)
job(interval={"seconds": 1}, id="metrics.fails")(jobs.fail)
job(interval={"seconds": 1}, id="metrics.in-pool", runs_in="processes")(jobs.succeed)
