"""What a history row says: who started a run, how it ended, and the misfire rule.

The vocabulary every part that writes history shares, so each rule is stated once.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduling.models import Execution


@dataclass(frozen=True)
class Origin:
    """What started a run: the schedule, or a manual request by someone, perhaps with arguments
    of its own for this run (None: the job's), recorded on its row for every placement to use."""

    kind: str = Execution.Origin.SCHEDULE
    requested_by: str = ""
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


SCHEDULED = Origin()


@dataclass(frozen=True)
class Outcome:
    status: str
    started_at: datetime | None
    finished_at: datetime
    duration: float | None
    exception: str = ""
    traceback: str = ""
    # The dotted names of the exception's class and its bases, to match a retry_on against
    # wherever the outcome is judged (a process-pool child's class never crosses over).
    error_types: tuple[str, ...] = ()
    output: str = ""  # what the run logged and printed, capped (scheduling.runs.output)


def missed_message(
    lateness: timedelta, grace: float | None, started: str = "started", why: str = ""
) -> str | None:
    """Why a run ``lateness`` late must not start, or None when it may (the misfire rule).

    The one rule wherever a run would start: the dispatcher, a pool thread, a task worker.
    Compared as seconds, not as a timedelta: a grace of any size must not overflow.
    """
    if grace is None or lateness.total_seconds() <= grace:
        return None
    because = f" ({why})" if why else ""
    return (
        f"Missed: {started} {lateness.total_seconds():.1f} s late, after its misfire grace time of "
        f"{grace} s{because}"
    )


def error_types(exc: BaseException) -> tuple[str, ...]:
    """The dotted names of ``exc``'s class and its bases, as retry_on stores them."""
    return tuple(f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__)


def storable(text: str) -> str:
    """``text`` as every database stores it: a NUL (PostgreSQL refuses it) becomes U+FFFD, and a
    lone surrogate (no UTF-8 at all: a file name decoded with surrogateescape) its escape. What a
    job prints or raises must never make its outcome, and the outcomes written with it, unwritable.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """The exception as "module.Class: message" and its full traceback, final line included."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return f"{name}: {exc}", "".join(traceback.format_exception(exc))
