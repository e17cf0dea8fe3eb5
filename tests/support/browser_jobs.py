"""Jobs for the runscheduler process behind the browser tests."""

from scheduling import job
from tests.support import jobs

job(cron="0 3 * * *", id="browser.nightly", name="Nightly report")(jobs.succeed)
job(interval={"hours": 1}, id="browser.hourly", name="Hourly sync")(jobs.succeed)
# Never fired in a test (hourly); run now with the arguments a test gives it.
job(interval={"hours": 1}, id="browser.writer", name="Argument writer", args=["unused.json"])(
    jobs.write_arguments
)
# Never fired in a test (hourly); run now, then cancelled from the admin while it sleeps.
job(interval={"hours": 1}, id="browser.long", name="Long export", runs_in="processes", args=[120])(jobs.sleep)
# Never fired in a test (hourly); run now after an alert was set on it in the admin.
job(interval={"hours": 1}, id="browser.failing", name="Failing import")(jobs.fail)
