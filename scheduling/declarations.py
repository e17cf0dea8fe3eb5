"""The ``@job`` decorator: declaring scheduled jobs next to the code they call.

Declaring only records the job in an in-memory registry and checks it; nothing touches the
database until ``runscheduler`` syncs the registry into the job store.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from apscheduler.util import obj_to_ref
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from scheduling import validation
from scheduling.conf import settings
from scheduling.placement import DEFAULT_ALIAS, Placement, RunsIn
from scheduling.policy import DEFAULT as DEFAULT_POLICY
from scheduling.policy import POLICY_NAMES, RunPolicy
from scheduling.schedules import ScheduleError

F = TypeVar("F", bound=Callable[..., Any])

MAX_ID_LENGTH = 255  # django_apscheduler's DjangoJob.id
# json.dumps(value, sort_keys=True, default=str), without making an encoder for each of the
# 100,000 declarations a site may fingerprint at start-up (the format must never change: a
# changed fingerprint would make every job "changed in code" and drop operators' overrides).
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, default=str)


class JobDeclarationError(ImproperlyConfigured):
    """A job declaration that cannot work; the message names the job and the problem."""


# Slots: a site may declare 100,000 jobs, and a __dict__ each was a tenth of what they held.
@dataclass(frozen=True, slots=True)
class Declaration:
    id: str
    func_ref: str
    name: str
    schedule: dict[str, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_instances: int = 1
    coalesce: bool = True
    misfire_grace_time: int | None = 60
    executor: str = DEFAULT_ALIAS  # where it runs: see scheduling.placement
    policy: dict[str, Any] = field(default_factory=dict)  # a RunPolicy's stored form: what is set
    _fingerprint: str = field(default="", init=False, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the code changes what this job runs or when."""
        if not self._fingerprint:
            payload = _FINGERPRINT_JSON.encode(self.as_dict())
            object.__setattr__(self, "_fingerprint", hashlib.sha256(payload.encode()).hexdigest())
        return self._fingerprint

    def as_dict(self) -> dict[str, Any]:
        # Left out when default, so declarations from before an option existed keep their fingerprint.
        placement = {} if self.executor == DEFAULT_ALIAS else {"executor": self.executor}
        policy = {"policy": self.policy} if self.policy else {}
        return (
            placement
            | policy
            | {
                "func": self.func_ref,
                "name": self.name,
                "schedule": self.schedule,
                "args": list(self.args),
                "kwargs": self.kwargs,
                "max_instances": self.max_instances,
                "coalesce": self.coalesce,
                "misfire_grace_time": self.misfire_grace_time,
            }
        )


registry: dict[str, Declaration] = {}
# Functions operators may schedule from the admin, by function reference: every @job function
# and every @schedulable one. The admin offers only these, never a free-text import path.
schedulables: dict[str, str] = {}

_UNSET: Any = object()


def job(
    func: F | None = None,
    *,
    cron: str | dict[str, Any] | None = None,
    interval: dt.timedelta | int | float | dict[str, Any] | None = None,
    date: dt.datetime | str | None = None,
    id: str | None = None,
    name: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    max_instances: int | None = None,
    coalesce: bool | None = None,
    misfire_grace_time: int | None = _UNSET,
    jitter: int | None = None,
    timezone: str | None = None,
    runs_in: str = RunsIn.THREADS,
    task_backend: str | None = None,
    task_queue: str | None = None,
    timeout: int | None = None,
    retries: int = DEFAULT_POLICY.retries,
    retry_backoff: int = DEFAULT_POLICY.retry_backoff,
    retry_backoff_max: int = DEFAULT_POLICY.retry_backoff_max,
    retry_on: Sequence[type[BaseException] | str] = DEFAULT_POLICY.retry_on,
    calendars: list[str] | tuple[str, ...] = (),
    overlap: str = DEFAULT_POLICY.overlap,
    lock: str | None = None,
    alert: dict[str, Any] | None = None,
    **unknown: Any,
) -> Any:
    """Declare ``func`` as a scheduled job.

    Exactly one of ``cron`` (a 5-field crontab string, or a dict of APScheduler cron fields such
    as ``{"second": "*/10"}``), ``interval`` (a timedelta, seconds, or a dict of weeks/days/hours/
    minutes/seconds) or ``date`` (a one-off run) is required. The job id defaults to the
    function's dotted path. Options left out take ``SCHEDULING_JOB_DEFAULTS``; a
    ``misfire_grace_time`` of ``None`` means "run however late". ``async def`` functions are
    run to completion on the worker thread.

    ``runs_in`` says where runs happen: ``"threads"`` (the scheduler's thread pool),
    ``"processes"`` (its process pool, for CPU-bound work) or ``"tasks"`` (enqueued to Django's
    tasks framework on ``task_backend`` and ``task_queue``, run by its workers).

    ``timeout`` (seconds) bounds a run: the process pool and task workers stop it at the
    deadline and record it *timed out*; a run in threads cannot be stopped and is recorded
    *overrunning* (see README, "Controlling runs").

    ``retries`` failed runs are tried again, each attempt a run of its own in the history: the
    n-th retry after ``retry_backoff * 2**(n-1)`` seconds, jittered and capped by
    ``retry_backoff_max``; ``retry_on`` (exception classes or dotted names) limits which
    failures retry (empty: any Exception).
    ``calendars`` names exclusion calendars (``scheduling.calendar``, or made in the admin): a
    fire inside one of their periods is recorded *skipped* instead of running. That each exists
    is checked at scheduler start, when the database can be read.
    ``overlap`` says what a fire that finds ``max_instances`` runs going does: ``"skip"``
    (recorded skipped), ``"queue"`` (run right after one ends; further fires meanwhile
    skipped) or ``"replace"`` (the oldest running one is cancelled; process pool and task
    workers only).
    ``lock`` names a lock across jobs: jobs naming the same lock never run at the same time,
    whichever scheduler or worker runs them; a fire that finds it held follows ``overlap``
    (recorded skipped with the job holding it, or queued until it is free).
    ``alert`` says when the job's alerts are raised and where they go (``{"to": ["mail_admins"],
    "on": ["failure", "missed"], "after_failures": 3, "no_success_within": 26 * 3600}``; see
    README, "Alerts"); left out, the site's SCHEDULING_ALERTS apply.
    """

    def decorate(function: F) -> F:
        job_id = id or f"{function.__module__}.{function.__qualname__}"
        try:
            declaration = _declare(
                function,
                job_id=job_id,
                name=name or function.__qualname__,
                spec={
                    "cron": cron,
                    "interval": interval,
                    "date": date,
                    "timezone_name": timezone,
                    "jitter": jitter,
                },
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                options={
                    "max_instances": max_instances,
                    "coalesce": coalesce,
                    "misfire_grace_time": misfire_grace_time,
                    "timeout": timeout,
                    "retries": retries,
                    "retry_backoff": retry_backoff,
                    "retry_backoff_max": retry_backoff_max,
                    "retry_on": retry_on,
                    "calendars": calendars,
                    "overlap": overlap,
                    "lock": lock,
                    "alert": alert,
                },
                placement=Placement.build(runs_in, task_backend, task_queue),
                unknown=unknown,
            )
        except (ScheduleError, ValueError, TypeError) as exc:
            raise JobDeclarationError(f"Job {job_id!r}: {exc}") from None
        register(declaration)
        return function

    return decorate(func) if func is not None else decorate


def _declare(
    function: Callable[..., Any],
    *,
    job_id: str,
    name: str,
    spec: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    placement: Placement,
    unknown: dict[str, Any],
) -> Declaration:
    if unknown:
        raise TypeError(
            f"unknown option {', '.join(map(repr, sorted(unknown)))}; schedule options go inside "
            "cron=, interval= or date= (e.g. interval={'minutes': 5})"
        )
    if len(job_id) > MAX_ID_LENGTH:
        raise ValueError(f"id is {len(job_id)} characters long; the job store allows {MAX_ID_LENGTH}")
    func_ref = _importable_ref(function)
    for label, value in (("args", list(args)), ("kwargs", kwargs)):
        if not value:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{label} cannot be stored ({exc}); use JSON values (str, int, float, bool, None, list, dict)"
            ) from None
        validation.check_storable(label, value)
    validation.text("name", name)
    if placement.runs_in == RunsIn.TASKS:
        check_task_placement(placement)  # against the site's task backends, which may change
    schedule, checked, policy = _checked(spec, options, placement)
    return Declaration(
        id=job_id,
        func_ref=func_ref,
        name=name,
        schedule=_copied(schedule),  # its own, not the cache's
        args=args,
        kwargs=kwargs,
        executor=placement.alias,
        policy=_copied(policy) if policy else {},
        **checked,
    )


def _checked(
    spec: dict[str, Any], options: dict[str, Any], placement: Placement
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The schedule, APScheduler's options and the stored run policy a declaration's keywords make.

    A site declares thousands of jobs with a few such sets (100,000 jobs took 8 s to declare,
    most of it checking the same options again): those that can be told apart by their hashable
    form are checked once (bounded cache), forgotten when a setting the check reads changes. The
    key holds what was given beyond the decorator's defaults.
    """
    given = {name: value for name, value in spec.items() if value is not None}
    explicit = {name: value for name, value in options.items() if value is not _OPTION_DEFAULTS[name]}
    try:
        keywords = validation.Keywords(
            (validation.frozen(given), validation.frozen(explicit) if explicit else (), placement),
            (spec, options, placement),
        )
        hash(keywords)
    except TypeError:
        return _check(spec, options, placement)
    return _checked_cached(keywords)


@functools.lru_cache(maxsize=256)
def _checked_cached(keywords: validation.Keywords) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return _check(*keywords.values)


def _forget_checked(*, setting: str, **kwargs: Any) -> None:
    if setting in ("SCHEDULING_JOB_DEFAULTS", "SCHEDULING_TASK_TIMEOUT"):
        _checked_cached.cache_clear()


setting_changed.connect(_forget_checked)


def _check(
    spec: dict[str, Any], options: dict[str, Any], placement: Placement
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    defaults = settings.JOB_DEFAULTS
    options = dict(options)
    for key in ("max_instances", "coalesce"):
        if options[key] is None:
            options[key] = defaults[key]
    if options["misfire_grace_time"] is _UNSET:
        options["misfire_grace_time"] = defaults["misfire_grace_time"]
    options = validation.options(options)
    policy = RunPolicy(**{name: options.pop(name) for name in POLICY_NAMES})
    validation.check_overlap_placement(policy.overlap, placement.runs_in)
    validation.check_task_timeout(policy.timeout, placement.runs_in, settings.TASK_TIMEOUT)
    return validation.schedule(**spec), options, policy.stored()


def _copied(value: Any) -> Any:
    """A copy of the dicts and lists in ``value``: each declaration gets its own, not the cache's."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map(_copied, value))
    return value


def _importable_ref(function: Callable[..., Any]) -> str:
    # The module is still being imported while its decorators run, so the reference can only be
    # checked for shape here; sync flags a job whose function cannot be imported.
    try:
        return obj_to_ref(function)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc}; declare the job on a module-level function") from None


# The option keywords @job passes on when they are left out, as the very objects it passes.
_OPTION_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(job).parameters.items()
    if parameter.kind == inspect.Parameter.KEYWORD_ONLY
}


def check_task_placement(placement: Placement) -> None:
    """Raise ValueError unless runs can be enqueued on the placement's backend and queue."""
    try:
        tasks = importlib.import_module("scheduling.runs.worker_task")
    except ImportError as exc:
        raise ValueError(
            f"runs_in='tasks' needs Django's tasks framework: Django 6, or on Django 5.2 the django-tasks "
            f"backport in INSTALLED_APPS ({exc})"
        ) from None
    tasks.check_placement(placement)


def register(declaration: Declaration) -> None:
    """Add a declaration to the registry; declaring the same job twice identically is harmless."""
    existing = registry.get(declaration.id)
    if existing is not None and existing != declaration:
        raise JobDeclarationError(
            f"Job {declaration.id!r} is declared twice: by {existing.func_ref} and by "
            f"{declaration.func_ref}; give one of them another id="
        )
    registry[declaration.id] = declaration
    schedulables.setdefault(declaration.func_ref, declaration.name)


def schedulable(func: F | None = None, *, name: str | None = None) -> Any:
    """Let operators schedule ``func`` from the admin, with arguments they enter as JSON."""

    def decorate(function: F) -> F:
        try:
            ref = _importable_ref(function)
        except ValueError as exc:
            raise JobDeclarationError(f"Schedulable {function!r}: {exc}") from None
        schedulables[ref] = name or function.__qualname__
        return function

    return decorate(func) if func is not None else decorate
