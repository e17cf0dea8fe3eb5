"""An hourly job: a runscheduler process running it sleeps until something changes."""

from scheduling import job
from tests.support import jobs

job(interval={"hours": 1}, id="proc.hourly")(jobs.succeed)
