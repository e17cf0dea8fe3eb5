"""Calling a job's function, wherever it runs: awaited if it is a coroutine function, timed, and
every failure turned into the run's outcome."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from asgiref.sync import async_to_sync
from django.utils import timezone

from scheduling.conf import settings
from scheduling.history.rows import Outcome, describe_exception, error_types
from scheduling.models import Execution
from scheduling.runs.observers import RunFacts, observed
from scheduling.runs.output import captured

logger = logging.getLogger(__name__)


def arguments_of(
    args: Sequence[Any], kwargs: Mapping[str, Any], execution: Execution | None
) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """The arguments a run is called with: its row's own (a run requested with arguments), where
    it has them, else the job's ``args`` and ``kwargs``."""
    if execution is None:
        return args, kwargs
    return (
        args if execution.args is None else execution.args,
        kwargs if execution.kwargs is None else execution.kwargs,
    )


def call_job(
    job_id: str,
    function: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    facts: RunFacts | None = None,
    look: bool = True,
) -> Outcome:
    """Call a job's function and time it; its exception, if any, becomes a failed outcome, and
    what it logs and prints becomes the outcome's output. The run's observers (Sentry Crons,
    OpenTelemetry: ``scheduling.runs.observers``) see it start and end, told ``facts``;
    ``look=False`` when the caller knows none is enabled."""
    # Observed outside the capture: what the observers themselves log is not the run's output.
    with observed(job_id, facts, look) as watch:
        with captured(settings.OUTPUT_LIMIT) as output:
            outcome = _call(job_id, function, args, kwargs)
        watch.ended(outcome)
    text = "" if output is None else output.value()
    # replace() costs more than the rest of a short run's bookkeeping: only when there is output.
    return replace(outcome, output=text) if text else outcome


def _call(
    job_id: str, function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Outcome:
    started_at = timezone.now()
    clock = time.perf_counter()
    logger.info("Running job %s", job_id)
    try:
        if inspect.iscoroutinefunction(function):
            function = async_to_sync(function)
        function(*args, **kwargs)
    # The job's own failure, whatever it is, becomes its recorded outcome.
    except BaseException as exc:
        duration = time.perf_counter() - clock
        message, formatted = describe_exception(exc)
        # With the traceback, so an AdminEmailHandler on this logger mails it.
        logger.error("Job %s failed after %.3f s: %s", job_id, duration, message, exc_info=exc)
        return Outcome(
            Execution.Status.FAILED,
            started_at,
            timezone.now(),
            duration,
            message,
            formatted,
            error_types(exc),
        )
    duration = time.perf_counter() - clock
    logger.info("Job %s succeeded in %.3f s", job_id, duration)
    return Outcome(Execution.Status.SUCCEEDED, started_at, timezone.now(), duration)
