"""Every ``SCHEDULING_*`` setting in one place, read when used so ``override_settings`` works."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings


class Settings:
    @property
    def MODULES(self) -> list[str]:
        """Modules to import for job declarations besides each installed app's ``jobs`` module."""
        return list(getattr(django_settings, "SCHEDULING_MODULES", []))

    @property
    def EMBEDDED(self) -> bool:
        """Run the scheduler inside the web server's processes (one active, the others standby)."""
        return bool(getattr(django_settings, "SCHEDULING_EMBEDDED", False))

    @property
    def THREADS(self) -> int:
        """Size of the thread pool that runs jobs."""
        return int(getattr(django_settings, "SCHEDULING_THREADS", 10))

    @property
    def PROCESSES(self) -> int:
        """Size of the process pool for jobs with ``runs_in="processes"`` (started on first use)."""
        return int(getattr(django_settings, "SCHEDULING_PROCESSES", os.cpu_count() or 1))

    @property
    def TASK_TIMEOUT(self) -> float:
        """Seconds after which a run handed to task workers, not taken or not finished, is recorded
        as interrupted: a worker died or none is running."""
        return float(getattr(django_settings, "SCHEDULING_TASK_TIMEOUT", 3600.0))

    @property
    def POLL_INTERVAL(self) -> float:
        """Seconds between checks for changes made by other processes (one indexed query each),
        while they are not pushed (see ``LISTEN``)."""
        return float(getattr(django_settings, "SCHEDULING_POLL_INTERVAL", 0.5))

    @property
    def FIRE_AHEAD(self) -> float:
        """Seconds before a fire's time at which the scheduler claims it (records its row, fenced)
        and holds its run until the time; 0 claims fires only once due. The loop widens it to how
        long its last claim took, up to ``MAX_FIRE_AHEAD`` times this (see scheduling.runtime.loop)."""
        return max(float(getattr(django_settings, "SCHEDULING_FIRE_AHEAD", 0.25)), 0.0)

    @property
    def LISTEN(self) -> bool:
        """On PostgreSQL, have changes pushed (LISTEN/NOTIFY) instead of polling for them; turn it
        off behind a pooler in transaction mode (the scheduler detects that, but only after trying)."""
        return bool(getattr(django_settings, "SCHEDULING_LISTEN", True))

    @property
    def HEARTBEAT_INTERVAL(self) -> float:
        """Seconds between two heartbeats of a running scheduler."""
        return float(getattr(django_settings, "SCHEDULING_HEARTBEAT_INTERVAL", 5.0))

    @property
    def HEARTBEAT_TIMEOUT(self) -> float:
        """A scheduler whose last heartbeat is older than this many seconds is considered dead."""
        return float(getattr(django_settings, "SCHEDULING_HEARTBEAT_TIMEOUT", 30.0))

    @property
    def LEASE_DURATION(self) -> float:
        """Seconds a scheduler holds the lease without renewing it; bounds the fail-over time."""
        return float(getattr(django_settings, "SCHEDULING_LEASE_DURATION", 8.0))

    @property
    def LEASE_RENEW_INTERVAL(self) -> float:
        """Seconds between lease renewals by the active scheduler and attempts by standbys."""
        return float(getattr(django_settings, "SCHEDULING_LEASE_RENEW_INTERVAL", 1.0))

    @property
    def SHUTDOWN_TIMEOUT(self) -> float:
        """Seconds to wait for running jobs on SIGTERM/SIGINT before recording them as interrupted."""
        return float(getattr(django_settings, "SCHEDULING_SHUTDOWN_TIMEOUT", 30.0))

    @property
    def DATABASE_RETRY_MAX(self) -> float:
        """Longest pause, in seconds, between retries while the database is unreachable."""
        return float(getattr(django_settings, "SCHEDULING_DATABASE_RETRY_MAX", 5.0))

    @property
    def HISTORY_RETENTION(self) -> timedelta:
        """How long execution history is kept before the built-in prune job deletes it."""
        return getattr(django_settings, "SCHEDULING_HISTORY_RETENTION", timedelta(days=30))

    @property
    def PRUNE_BATCH_SIZE(self) -> int:
        """Rows deleted per statement when pruning history, so no long lock is held."""
        return int(getattr(django_settings, "SCHEDULING_PRUNE_BATCH_SIZE", 1000))

    @property
    def OUTPUT_LIMIT(self) -> int:
        """Characters of a run's output (what it logs and prints) kept with its row: the first
        and the last half of it when it wrote more; 0 captures nothing."""
        return int(getattr(django_settings, "SCHEDULING_OUTPUT_LIMIT", 64 * 1024))

    @property
    def ALERTS(self) -> dict[str, Any] | None:
        """The alerts of jobs that declare none (a dict like @job's ``alert``); None: no alerts."""
        return getattr(django_settings, "SCHEDULING_ALERTS", None)

    @property
    def ALERT_INTERVAL(self) -> float:
        """Seconds within which a second alert of one job and rule is recorded but not sent."""
        return float(getattr(django_settings, "SCHEDULING_ALERT_INTERVAL", 900.0))

    @property
    def METRICS_ACCESS(self) -> object:
        """Who may read the Prometheus metrics at ``metrics/``: ``None`` (off: the URL answers 404),
        ``"token"`` (an API token or a session of a user with ``view_job``), ``"staff"`` (a staff
        user, by token or session), or a list of client addresses and networks (``"10.0.0.0/8"``).

        Returned as set; ``scheduling.metrics_access.parse`` reads it and the system checks refuse
        a value it cannot read."""
        return getattr(django_settings, "SCHEDULING_METRICS_ACCESS", None)

    @property
    def METRICS_WINDOW(self) -> timedelta:
        """How far back the ``scheduling_window_*`` metrics look: runs whose fire time is this recent."""
        return getattr(django_settings, "SCHEDULING_METRICS_WINDOW", timedelta(hours=1))

    @property
    def JOB_DEFAULTS(self) -> dict[str, object]:
        """Defaults for options a declaration leaves out."""
        defaults: dict[str, object] = {
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": 60,
        }
        defaults.update(getattr(django_settings, "SCHEDULING_JOB_DEFAULTS", {}))
        return defaults


settings = Settings()
