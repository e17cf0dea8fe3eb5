"""Jobs for the runscheduler process behind the browser tests."""

from scheduling import job
from tests.support import jobs

job(cron="0 3 * * *", id="browser.nightly", name="Nightly report")(jobs.succeed)
job(interval={"hours": 1}, id="browser.hourly", name="Hourly sync")(jobs.succeed)
