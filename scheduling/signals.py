"""Signals a site can connect to for alerting or metrics.

Each is sent with ``sender`` = the job id and ``execution`` = the scheduling.Execution row. They are
sent with ``send_robust``: a receiver that raises is logged, never breaks the scheduler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.dispatch import Signal

if TYPE_CHECKING:
    from scheduling.models import Execution

logger = logging.getLogger(__name__)

job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()
job_missed = Signal()
# A fire skipped because a run of its job was still going or its lock was held (max_instances,
# overlap policy, lock); not one skipped for a maintenance pause or an exclusion calendar.
job_skipped = Signal()


def notify(signal: Signal, execution: Execution) -> None:
    """Send a signal; a receiver that fails is logged and never stops the run or the scheduler."""
    for receiver, result in signal.send_robust(sender=execution.job_id, execution=execution):
        if isinstance(result, Exception):
            logger.error("A receiver of a scheduling signal failed (%r): %s", receiver, result)
