"""How a job's runs are controlled beyond APScheduler's own options: its run policy.

APScheduler pickles a fixed set of job attributes (max_instances, coalesce, misfire grace
time…) into the job store; anything more is ours and lives in ``ScheduledJob.run_policy``, a
JSON object holding only what differs from the defaults. The due query reads it in the same
statement as the due jobs (see ``JobStore.get_due_jobs_and_next_run_time``), so a policy costs
no query per pass; a job added straight through ``DjangoJobStore`` has none and runs with the
defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

# The option names of a run policy, as @job, control.change, the admin and the API take them.
POLICY_NAMES = (
    "timeout",
    "calendars",
    "retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_on",
    "overlap",
    "lock",
    "alert",
)

# What a fire does when it finds max_instances runs of its job still going.
OVERLAP_POLICIES = ("skip", "queue", "replace")
# What alerts a job's runs: a failure (its last attempt failed, timed out or was interrupted), a
# missed fire, a fire skipped because a run was still going or its lock was held (not for a
# maintenance pause or a calendar: someone asked for those).
ALERT_EVENTS = ("failure", "missed", "skipped")


@dataclass(frozen=True)
class AlertPolicy:
    """When a job's alerts are raised and where they go (see scheduling.history.alerts)."""

    # "mail_admins", an e-mail address, an http(s) URL (a JSON POST), "slack:<url>" (a
    # Slack-compatible body), or "log" (the scheduling.alerts logger).
    to: tuple[str, ...] = ()
    on: tuple[str, ...] = ("failure",)
    after_failures: int = 1  # a failure alerts once this many runs in a row failed
    longer_than: int | None = None  # seconds: a run still going after this long alerts
    # A run still going after this many times the job's usual duration (the median of its last
    # successes; see scheduling.history.alerts.usual_durations) alerts.
    longer_than_usual: float | None = None
    no_success_within: int | None = None  # seconds: a job without a success for this long alerts

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", tuple(self.to))
        object.__setattr__(self, "on", tuple(self.on))

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> AlertPolicy:
        known = {item.name for item in fields(cls)}
        return cls(**{name: value for name, value in stored.items() if name in known})

    def stored(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()
        }


@dataclass(frozen=True)
class RunPolicy:
    timeout: int | None = None  # seconds a run may take before it is stopped (or flagged overrunning)
    calendars: tuple[str, ...] = ()  # names of exclusion calendars (scheduling.calendars); a list in JSON
    # Failed runs are tried again (see scheduling.history.attempts): up to ``retries`` more
    # attempts, the n-th after about retry_backoff * 2**(n-1) seconds (jittered, at most
    # retry_backoff_max), only for exceptions of the classes in ``retry_on`` (dotted names;
    # empty: any Exception).
    retries: int = 0
    retry_backoff: int = 30
    retry_backoff_max: int = 3600
    retry_on: tuple[str, ...] = ()
    # A fire that finds max_instances runs going: "skip" it (recorded skipped), "queue" it (run
    # once right after a running one ends; others meanwhile skipped), or "replace" the oldest
    # running one (cancelled; the fire is queued until its process is gone).
    overlap: str = "skip"
    # A lock across jobs: jobs naming the same lock never run at the same time (so a job with a
    # lock runs one run at a time, whatever its max_instances). A fire that finds it held follows
    # ``overlap`` as a busy fire does ("replace" stops only a run of its own job). See
    # scheduling.history.locks.
    lock: str | None = None
    # The job's alerts; None: the site's (SCHEDULING_ALERTS).
    alert: AlertPolicy | None = None

    def __post_init__(self) -> None:
        # Stored as a JSON list: a tuple here, so that policies compare equal however they came.
        object.__setattr__(self, "retry_on", tuple(self.retry_on))
        if isinstance(self.alert, Mapping):
            object.__setattr__(self, "alert", AlertPolicy.from_stored(self.alert))

    @property
    def attempts(self) -> int:
        """How many times a fire may run: once, plus its retries."""
        return self.retries + 1

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> RunPolicy:
        """The policy a ``run_policy`` column holds; unknown keys (a newer release's) are ignored."""
        if not stored:
            return DEFAULT
        known = {item.name for item in fields(cls)}
        values = {name: value for name, value in stored.items() if name in known}
        if "calendars" in values:
            values["calendars"] = tuple(values["calendars"])
        return cls(**values)

    def stored(self) -> dict[str, Any]:
        """What the ``run_policy`` column holds for this policy: what differs from the defaults."""
        # Field by field, not asdict(): that deep-copies every value, and each declared job is
        # stored this way at start-up.
        stored = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name != "alert" and value != getattr(DEFAULT, item.name):
                stored[item.name] = list(value) if isinstance(value, tuple) else value
        if self.alert is not None:
            stored["alert"] = self.alert.stored()
        return stored


DEFAULT = RunPolicy()

REDACTED = "…"  # what stands for the path and query of a webhook URL where it is shown


def shown_destination(destination: str) -> str:
    """An alert destination as logs and read-only pages show it: a webhook URL's path and query
    are its secret (Slack's and Mattermost's hooks are bearer URLs), so only its host is shown."""
    url = destination.removeprefix("slack:")
    if not url.startswith(("http://", "https://")):
        return destination
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range: show no host at all
        return f"{destination[: len(destination) - len(url)]}{REDACTED}"
    return f"{destination[: len(destination) - len(url)]}{parts.scheme}://{host}{port}/{REDACTED}"
