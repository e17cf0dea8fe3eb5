"""Database writes that outlive an outage.

The outcome of a run exists only in memory until it is on disk, so history writes are retried
with backoff while the database is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections

from scheduling.conf import settings

logger = logging.getLogger(__name__)


T = TypeVar("T")

WRITE_RETRY_FOR = 300.0  # seconds a history write keeps being retried while the database is away


def retrying(write: Callable[[], T], what: str, retry_for: float | None = None) -> T:
    """Run a database write, retrying with backoff while the database is unreachable.

    The write must be idempotent or fail cleanly (an insert guarded by a unique constraint, an
    update conditioned on the current status), since an error may come after it took effect.
    """
    deadline = time.monotonic() + (WRITE_RETRY_FOR if retry_for is None else retry_for)
    delay = 0.2
    while True:
        try:
            return write()
        # Connection trouble only: other errors would fail the same way on every attempt.
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Could not %s (%s); retrying in %.1f s", what, exc, delay)
            close_old_connections()
            time.sleep(delay)
            delay = min(delay * 2, settings.DATABASE_RETRY_MAX)
