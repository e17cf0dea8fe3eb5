"""Changes pushed by PostgreSQL (LISTEN/NOTIFY), so that an idle scheduler need not poll for them.

Migration 0023 puts triggers on the job store, the run requests and the maintenance pause (one
notification per statement, on a channel named after the table), and on a failed run being given
a retry. This thread LISTENs on a connection of its own and calls ``on_change(channel)`` for each
notification; the loop and the service poll only while ``pushed`` is False.

``pushed`` is True only once a notification this listener sent itself (a *probe*) has come back:
LISTEN is accepted by a pooler in transaction mode (PgBouncer) that then never delivers, and a
connection can die without an error (a dropped NAT entry). So a probe goes out after LISTEN and
after every ``probe_interval`` seconds without any notification; one that is not back within
``probe_timeout`` seconds, or any error, closes the connection: changes are polled meanwhile, and
the listener connects again with backoff. Notifications sent while it was not listening are
lost, so each return to ``pushed`` is reported as a change on every channel (one look at all).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import connections

from scheduling.conf import settings

JOBS = "scheduling_jobs"  # the job store, and a failed run given a retry
RUN_REQUESTS = "scheduling_run_requests"
MAINTENANCE = "scheduling_maintenance"
CHANNELS = (JOBS, RUN_REQUESTS, MAINTENANCE)
PROBE = "scheduling_probe"  # the listener's own test notifications

PROBE_INTERVAL = 45.0  # seconds without any notification before delivery is checked again
PROBE_TIMEOUT = 5.0  # seconds a probe may take to come back
RECONNECT_MAX = 60.0  # seconds between attempts to listen again, at most
STOP_CHECK = 0.5  # seconds the thread waits for notifications before it looks at its stop flag
# The triggers of migration 0023, by table. The probe calls pg_notify itself, so it comes back
# even where they were dropped or disabled (a restore without them, a hand-made change): then
# nothing of the tables' changes would be heard while the status said "pushed".
TRIGGERS = {
    "django_apscheduler_djangojob": "scheduling_notify",
    "scheduling_runrequest": "scheduling_notify",
    "scheduling_maintenance": "scheduling_notify",
    "scheduling_execution": "scheduling_notify_retry",
}
# Without these, a connection whose peer vanished stays "open" until the next probe times out.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

logger = logging.getLogger(__name__)


class NotDelivered(Exception):
    """LISTEN was accepted, but the listener's own notification did not come back."""


class ChangeListener:
    """A thread that LISTENs on its own connection and reports each change notified."""

    def __init__(
        self,
        on_change: Callable[[str], None],
        alias: str = "default",
        *,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.on_change = on_change
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        # Read here, in the caller's thread: the listener's is not one Django manages.
        self.params = connection_params(alias)
        self.pushed = False
        self.why_polled = "the listener is connecting"
        self.backend_pid: int | None = None  # the listening session's, while there is one
        self._failures = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduling-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                self._listen()
            # Whatever ends a listening session, changes are polled until the next one works.
            except (psycopg.Error, OSError, NotDelivered) as exc:
                self._retry_later(describe(exc))
            # Nothing else is expected; but a thread that died would leave ``pushed`` True and
            # the loop would never poll again.
            except Exception as exc:
                logger.exception("The change listener failed")
                self._retry_later(describe(exc))

    def _retry_later(self, why: str) -> None:
        self._failures += 1
        delay = min(2.0**self._failures, RECONNECT_MAX)
        self._polled(f"{why}; listening again in {delay:g} s")
        self._stopping.wait(delay)

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.params, autocommit=True) as connection:
            self.backend_pid = connection.info.backend_pid
            for channel in (*CHANNELS, PROBE):
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            check_triggers(connection)
            probe: str | None = self._probe(connection)
            probe_sent = heard = checked = time.monotonic()
            while not self._stopping.is_set():
                # A trigger dropped or disabled while this session listens silences its table
                # without an error, and the probe (pg_notify itself) cannot tell: looked up again
                # on a timer, busy or not, and the session ends (polling) once one is gone.
                if time.monotonic() - checked > self.probe_interval:
                    check_triggers(connection)
                    checked = time.monotonic()
                for notification in connection.notifies(timeout=STOP_CHECK):
                    heard = time.monotonic()
                    if notification.channel != PROBE:
                        self.on_change(notification.channel)
                    elif notification.payload == probe:
                        probe = None
                        self._delivered()
                if probe is not None and time.monotonic() - probe_sent > self.probe_timeout:
                    raise NotDelivered(
                        f"LISTEN was accepted but a test notification did not come back within "
                        f"{self.probe_timeout:g} s (a pooler in transaction mode?)"
                    )
                if probe is None and time.monotonic() - heard > self.probe_interval:
                    probe, probe_sent = self._probe(connection), time.monotonic()
        self.backend_pid = None

    def _probe(self, connection: Any) -> str:
        """Send a notification only this listener waits for; returns its payload."""
        payload = uuid.uuid4().hex
        connection.execute("SELECT pg_notify(%s, %s)", (PROBE, payload))
        return payload

    def _delivered(self) -> None:
        self._failures = 0
        if self.pushed:
            return
        self.pushed = True
        logger.info("Changes are pushed by the database (LISTEN/NOTIFY)")
        for channel in CHANNELS:
            self.on_change(channel)

    def _polled(self, why: str) -> None:
        (logger.warning if self.pushed or self._failures == 1 else logger.debug)(
            "Changes are polled: %s", why
        )
        self.pushed = False
        self.why_polled = why
        self.backend_pid = None


def check_triggers(connection: Any) -> None:
    """Raise NotDelivered unless every trigger of TRIGGERS is on its table and fires.

    Looked up at each listening session's start and every probe interval while it listens: one
    that is missing keeps changes polled, and the listener's retries (up to a minute apart) find
    it once migration 0023 is applied again. Firing means enabled for ordinary sessions: 'O'
    (origin and local) or 'A' (always) — not 'D' (disabled) nor 'R' (replica sessions only).
    """
    found = connection.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgenabled IN ('O', 'A') "
        "AND t.tgrelid IN (SELECT to_regclass(name) FROM unnest(%s::text[]) AS name)",
        (list(TRIGGERS),),
    ).fetchall()
    if missing := sorted(set(TRIGGERS.items()) - set(found)):
        names = ", ".join(f"{trigger} on {table}" for table, trigger in missing)
        raise NotDelivered(f"the trigger(s) {names} are missing or do not fire (migration 0023)")


def connection_params(alias: str) -> dict[str, Any]:
    """The libpq parameters of Django's connection ``alias`` (its OPTIONS included)."""
    params = connections[alias].get_connection_params()
    # Django's own cursor class and type adapters: the listener reads no rows.
    for django_only in ("cursor_factory", "context"):
        params.pop(django_only, None)
    return KEEPALIVES | params


def why_not_pushed(alias: str = "default") -> str | None:
    """Why changes cannot be pushed on this database; None when they can."""
    vendor = connections[alias].vendor
    if vendor != "postgresql":
        return f"{connections[alias].display_name} has no LISTEN/NOTIFY"
    if not settings.LISTEN:
        return "SCHEDULING_LISTEN is off"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "listening needs psycopg 3"
    return None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
