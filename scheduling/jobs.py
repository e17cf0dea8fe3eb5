"""Jobs that come with the app."""

from scheduling import history
from scheduling.declarations import job


@job(cron="17 3 * * *", id="scheduling.prune_history", name="Prune old execution history")
def prune_history() -> int:
    """Delete execution history older than SCHEDULING_HISTORY_RETENTION, in batches."""
    return history.prune()
