"""Sentry Crons: each job is a monitor; each run checks in *in progress* as it starts and *ok*
or *error* as it ends, from the process that runs it, with one check-in id.

The monitor's configuration (schedule, time zone, check-in margin, max runtime) rides on each
run's in-progress check-in, which upserts it: Sentry's ingest takes a configuration only with a
check-in (its REST API would need an auth token besides the DSN), so a schedule changed in the
admin reaches Sentry at the job's next run, and no query is made for it (see docs/design.md).

Used when a client with a DSN is active in the process. ``sentry_sdk`` is not imported here: a
client is active only once the site called ``sentry_sdk.init``, which imported it; importing it
anyway cost every process that merely had the package installed a quarter of a second at start.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any

from scheduling.models import Execution
from scheduling.runs.observers.base import Ending, RunFacts

if TYPE_CHECKING:
    from scheduling.history.rows import Outcome


def _active_sdk() -> Any:
    """``sentry_sdk`` when the site imported it and a client with a DSN is active, else None."""
    sdk = sys.modules.get("sentry_sdk")  # optional: pip install django-scheduling[sentry]
    if sdk is None:
        return None
    client = sdk.get_client()
    return sdk if client.is_active() and client.dsn is not None else None


def capture_checkin(**checkin: Any) -> None:
    from sentry_sdk.crons import capture_checkin as capture  # imported by the site's sentry_sdk.init

    capture(**checkin)


SLUG_LENGTH = 50  # Sentry's longest monitor slug
HASH_LENGTH = 8


def monitor_slug(job_id: str) -> str:
    """The job's monitor slug: the id itself when it is one already (lowercase letters, digits,
    dashes), else the id lowercased with each run of other characters made one dash, cut to fit,
    and the first 8 hex digits of its SHA-256 appended, so two ids never share a monitor."""
    if len(job_id) <= SLUG_LENGTH and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", job_id):
        return job_id
    readable = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:HASH_LENGTH]
    readable = readable[: SLUG_LENGTH - HASH_LENGTH - 1].rstrip("-")
    return f"{readable}-{digest}" if readable else digest


def monitor_config(facts: RunFacts | None) -> dict[str, Any] | None:
    """The monitor's configuration, or None for a job without a schedule Sentry can express (its
    check-ins then reach only a monitor created in Sentry by hand under its slug)."""
    if facts is None or facts.schedule is None:
        return None
    schedule: dict[str, Any] = {"type": facts.schedule.kind, "value": facts.schedule.value}
    if facts.schedule.unit is not None:
        schedule["unit"] = facts.schedule.unit
    config: dict[str, Any] = {"schedule": schedule}
    if facts.timezone is not None:
        config["timezone"] = facts.timezone
    # Minutes, rounded up: a fire may start late by its misfire grace (and jitter) before it is missed.
    if facts.late_allowance is not None:
        config["checkin_margin"] = max(1, math.ceil(facts.late_allowance / 60))
    if facts.timeout is not None:
        config["max_runtime"] = max(1, math.ceil(facts.timeout / 60))
    return config


class SentryCrons:
    name = "sentry"

    def enabled(self) -> bool:
        return _active_sdk() is not None

    def start(self, job_id: str, execution: Execution | None, facts: RunFacts | None) -> Ending:
        slug = monitor_slug(job_id)
        # Ours, not the SDK's: the closing check-in pairs with it even if this one was dropped.
        check_in_id = uuid.uuid4().hex
        capture_checkin(
            monitor_slug=slug,
            check_in_id=check_in_id,
            status="in_progress",
            monitor_config=monitor_config(facts),
        )

        def end(outcome: Outcome) -> None:
            ok = outcome.status == Execution.Status.SUCCEEDED
            capture_checkin(
                monitor_slug=slug,
                check_in_id=check_in_id,
                status="ok" if ok else "error",
                duration=outcome.duration,
            )

        return end


def flush(timeout: float) -> None:
    sdk = sys.modules.get("sentry_sdk")
    if sdk is not None and sdk.get_client().is_active():
        sdk.flush(timeout)
