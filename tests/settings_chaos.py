"""Settings of the schedulers of the chaos run: the test settings with a short lease.

A lease of 3 s instead of 8 s gives more take-overs per minute of faults, and a renewal, poll and
heartbeat well inside it keep the lease's safety margin meaningful.
"""

from tests.settings import *  # noqa: F403

SCHEDULING_LEASE_DURATION = 3.0
SCHEDULING_LEASE_RENEW_INTERVAL = 0.5
SCHEDULING_POLL_INTERVAL = 0.25
SCHEDULING_HEARTBEAT_INTERVAL = 0.5
SCHEDULING_HEARTBEAT_TIMEOUT = 5.0
SCHEDULING_DATABASE_RETRY_MAX = 2.0
SCHEDULING_SHUTDOWN_TIMEOUT = 10.0
