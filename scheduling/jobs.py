"""Jobs that come with the app."""

from scheduling.declarations import job
from scheduling.history.housekeeping import prune


@job(cron="17 3 * * *", id="scheduling.prune_history", name="Prune old execution history")
def prune_history() -> int:
    """Delete execution history older than SCHEDULING_HISTORY_RETENTION, in batches."""
    return prune()
