"""The admin's schedule form: one of cron, interval or one-off date, plus the job's options."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
from typing import Any, cast

from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import ref_to_obj
from django import forms
from django.contrib.admin import widgets
from django.forms.fields import InvalidJSONInput, JSONString
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_apscheduler.models import DjangoJob

from scheduling import control, declarations, safejson, validation
from scheduling.conf import settings
from scheduling.crontab import resolve_wall_time
from scheduling.models import Job
from scheduling.placement import DEFAULT_ALIAS, Placement, RunsIn
from scheduling.policy import DEFAULT as DEFAULT_POLICY
from scheduling.policy import AlertPolicy
from scheduling.schedules import ScheduleError, build_trigger, check_fires, crontab_of, job_zone, spec_of
from scheduling.store import policies_of, unpickle

UNITS = [("seconds", _("seconds")), ("minutes", _("minutes")), ("hours", _("hours")), ("days", _("days"))]
UNIT_SECONDS = [("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)]
KIND_FIELD = {"cron": "cron", "interval": "every", "date": "run_at"}
# The form field that shows a validation error about a part of the schedule.
SPEC_FIELD = {
    "cron": "cron",
    "interval": "every",
    "date": "run_at",
    "timezone": "time_zone",
    "jitter": "jitter",
}
MAX_ARGUMENTS_LENGTH = 64 * 1024


class BoundedJSONField(forms.JSONField):
    """A JSONField that parses with ``scheduling.safejson``: deeply nested or huge input is a
    form error, not a RecursionError (Django's field calls ``json.loads`` as it is).
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        try:
            converted = safejson.loads(value, max_length=MAX_ARGUMENTS_LENGTH)
        except safejson.JsonInputError as exc:
            if exc.code == "invalid_json":  # Django's own words for text that is not JSON
                raise forms.ValidationError(
                    self.error_messages["invalid"], code="invalid", params={"value": value}
                ) from None
            raise forms.ValidationError(str(exc), code=exc.code) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Called again to show the form with its errors: the same limits apply.
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return safejson.loads(data, max_length=MAX_ARGUMENTS_LENGTH)
        except safejson.JsonInputError:
            return InvalidJSONInput(data)


class JobScheduleForm(forms.ModelForm):
    kind = forms.ChoiceField(
        label=_("Type of schedule"),
        choices=[("cron", _("Cron")), ("interval", _("Interval")), ("date", _("Once"))],
        widget=forms.RadioSelect,
    )
    cron = forms.CharField(
        label=_("Cron expression"),
        required=False,
        # The limit is checked by scheduling.validation, in the same words as everywhere else.
        widget=forms.TextInput(attrs={"maxlength": validation.MAX_CRONTAB_LENGTH}),
        help_text=_("minute hour day month weekday, e.g. '0 3 * * *' (weekday 0 or 7 is Sunday)"),
    )
    every = forms.IntegerField(label=_("Every"), required=False, min_value=1)
    unit = forms.ChoiceField(label=_("Unit"), choices=UNITS, required=False, initial="minutes")
    run_at = forms.SplitDateTimeField(
        label=_("Run once at"), required=False, widget=widgets.AdminSplitDateTime, help_text=_("Local time.")
    )
    time_zone = forms.CharField(
        label=_("Time zone"),
        required=False,
        widget=forms.TextInput(attrs={"maxlength": validation.MAX_TIMEZONE_LENGTH}),
        help_text=_("For cron and interval schedules; blank: the site's."),
    )
    # Bounds are checked by scheduling.validation (clean_* below); the widgets only show them.
    jitter = forms.IntegerField(
        label=_("Jitter (s)"),
        required=False,
        widget=forms.NumberInput(attrs={"min": 0, "max": validation.MAX_JITTER}),
        help_text=_("Random delay of up to this many seconds."),
    )
    max_instances = forms.IntegerField(
        label=_("Max instances"), widget=forms.NumberInput(attrs={"min": 1, "max": validation.MAX_INSTANCES})
    )
    coalesce = forms.BooleanField(
        label=_("Coalesce"),
        required=False,
        help_text=_("After downtime, run once instead of once per missed run."),
    )
    misfire_grace_time = forms.IntegerField(
        label=_("Misfire grace time (s)"),
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "max": validation.MAX_MISFIRE_GRACE_TIME}),
        help_text=_("How late a run may start before it is recorded as missed; blank: any delay."),
    )
    timeout = forms.IntegerField(
        label=_("Timeout (s)"),
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "max": validation.MAX_TIMEOUT}),
        help_text=_(
            "How long a run may take: the process pool and task workers stop it then; a run in "
            "threads is marked overrunning. Blank: no limit."
        ),
    )
    retries = forms.IntegerField(
        label=_("Retries"),
        required=False,
        initial=DEFAULT_POLICY.retries,
        widget=forms.NumberInput(attrs={"min": 0, "max": validation.MAX_RETRIES}),
        help_text=_("How often a failed run is tried again, each attempt a run of its own. Blank: none."),
    )
    retry_backoff = forms.IntegerField(
        label=_("Retry backoff (s)"),
        required=False,
        initial=DEFAULT_POLICY.retry_backoff,
        widget=forms.NumberInput(attrs={"min": 0, "max": validation.MAX_RETRY_BACKOFF}),
        help_text=_("About this long before the first retry, doubled for each next one (with jitter)."),
    )
    retry_backoff_max = forms.IntegerField(
        label=_("Longest backoff (s)"),
        required=False,
        initial=DEFAULT_POLICY.retry_backoff_max,
        widget=forms.NumberInput(attrs={"min": 0, "max": validation.MAX_RETRY_BACKOFF_MAX}),
    )
    retry_on = forms.CharField(
        label=_("Retry on"),
        required=False,
        help_text=_(
            "Exception classes that retry, by dotted name, separated by commas (ConnectionError, "
            "requests.Timeout). Blank: any exception."
        ),
    )
    overlap = forms.ChoiceField(
        label=_("When a run is still going"),
        choices=[
            ("skip", _("skip the fire (recorded skipped)")),
            ("queue", _("queue the fire: run it once the run going ends")),
            ("replace", _("replace: cancel the oldest run going, then run (process pool, task workers)")),
        ],
        initial=DEFAULT_POLICY.overlap,
        required=False,  # left out: skip, as before the option existed
        help_text=_("What a fire does when max instances runs of the job are still going."),
    )
    lock = forms.CharField(
        label=_("Lock"),
        required=False,
        max_length=validation.MAX_LOCK_NAME_LENGTH,
        help_text=_(
            "Jobs naming the same lock never run at the same time; a fire that finds it held is "
            "skipped or queued, as above. Blank: no lock."
        ),
    )
    alerts = forms.ChoiceField(
        label=_("Alerts"),
        choices=[
            ("site", _("the site's (SCHEDULING_ALERTS)")),
            ("own", _("its own, as below")),
            ("off", _("none")),
        ],
        initial="site",
        required=False,
    )
    alert_to = forms.CharField(
        label=_("Send alerts to"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One per line: mail_admins, log, an e-mail address, an http(s) URL, slack:<url>."),
    )
    alert_on = forms.MultipleChoiceField(
        label=_("Alert on"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[
            ("failure", _("a failure (its last attempt failed, timed out or was interrupted)")),
            ("missed", _("a missed fire")),
            ("skipped", _("a fire skipped because a run was still going or its lock was held")),
        ],
        initial=["failure"],
    )
    alert_after_failures = forms.IntegerField(
        label=_("Failures in a row before an alert"), required=False, min_value=1, initial=1
    )
    alert_longer_than = forms.IntegerField(
        label=_("Alert on a run longer than (s)"), required=False, min_value=1
    )
    alert_longer_than_usual = forms.FloatField(
        label=_("Alert on a run longer than its usual duration times"),
        required=False,
        help_text=_("E.g. 3: a run going three times as long as the median of the job's last successes."),
    )
    alert_no_success_within = forms.IntegerField(
        label=_("Alert when no success within (s)"), required=False, min_value=1
    )
    calendars = forms.MultipleChoiceField(
        label=_("Calendars"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("A fire inside one of their excluded periods is recorded skipped instead of running."),
    )

    runs_in = forms.ChoiceField(
        label=_("Runs in"),
        # Worded for the form (RunsIn's labels say where a run went, in the history).
        choices=[
            (RunsIn.THREADS, _("the scheduler's threads")),
            (RunsIn.PROCESSES, _("the scheduler's process pool (CPU-bound work)")),
            (RunsIn.TASKS, _("task workers (Django's tasks framework)")),
        ],
        initial=RunsIn.THREADS,
    )
    task_backend = forms.CharField(
        label=_("Task backend"),
        required=False,
        help_text=_("For task workers: a TASKS alias; blank: 'default'."),
    )
    task_queue = forms.CharField(
        label=_("Task queue"), required=False, help_text=_("For task workers; blank: 'default'.")
    )

    class Meta:
        model = Job
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec: dict[str, Any] | None = None
        calendars = cast(forms.MultipleChoiceField, self.fields["calendars"])
        calendars.choices = [(name, name) for name in control.calendar_names()]
        self.current_trigger = unpickle(self.instance.job_state).get("trigger") if self.instance.pk else None
        if self.instance.pk and not self.is_bound:
            self.initial.update(initial_values(unpickle(self.instance.job_state)))
            policy = policies_of([self.instance.pk])[self.instance.pk]
            self.initial.update(policy.stored(), retry_on=", ".join(policy.retry_on))
            self.initial.update(alert_initial(policy.alert))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self._clean_alert(data)
        self._clean_placement(data)
        try:
            validation.check_overlap_placement(data.get("overlap") or "skip", self.placement.runs_in)
        except validation.InputError as exc:
            self.add_error("overlap", str(exc))
        kind = data.get("kind")
        if kind not in KIND_FIELD:
            return data
        try:
            self.spec = self._spec(kind, data)
            if self.spec is not None:
                validation.check_spec(self.spec)
                check_fires(build_trigger(self.spec))
        except validation.InputError as exc:
            self.add_error(SPEC_FIELD.get(exc.field.split(".")[0], KIND_FIELD[kind]), str(exc))
        except ScheduleError as exc:
            self.add_error("time_zone" if "timezone" in str(exc) else KIND_FIELD[kind], str(exc))
        return data

    # The same limits, in the same words, as @job, the API and scheduling.control.
    def clean_jitter(self) -> int | None:
        return self._checked("jitter", validation.check_jitter)

    def clean_max_instances(self) -> int | None:
        return self._checked("max_instances", validation.check_max_instances)

    def clean_misfire_grace_time(self) -> int | None:
        return self._checked("misfire_grace_time", validation.check_misfire_grace_time)

    def clean_timeout(self) -> int | None:
        return self._checked("timeout", validation.check_timeout)

    # Blank retry fields take the defaults, so a form posted without them changes nothing.
    def clean_retries(self) -> int:
        return self._checked_or_default("retries", validation.check_retries)

    def clean_retry_backoff(self) -> int:
        return self._checked_or_default("retry_backoff", validation.check_retry_backoff)

    def clean_retry_backoff_max(self) -> int:
        return self._checked_or_default("retry_backoff_max", validation.check_retry_backoff_max)

    def clean_retry_on(self) -> list[str]:
        names = [name for name in re.split(r"[,\s]+", self.cleaned_data.get("retry_on") or "") if name]
        try:
            return validation.check_retry_on(names)
        except validation.InputError as exc:
            raise forms.ValidationError(str(exc), code=exc.code) from None

    def _checked_or_default(self, name: str, check: Any) -> Any:
        if self.cleaned_data.get(name) is None:
            return getattr(DEFAULT_POLICY, name)
        return self._checked(name, check)

    def _clean_alert(self, data: dict[str, Any]) -> None:
        choice = data.get("alerts") or "site"
        if choice != "own":
            data["alert"] = None if choice == "site" else {"to": []}
            return
        given = {
            "to": [line.strip() for line in (data.get("alert_to") or "").splitlines() if line.strip()],
            "on": list(data.get("alert_on") or []),
            "after_failures": data.get("alert_after_failures") or 1,
            "longer_than": data.get("alert_longer_than"),
            "longer_than_usual": data.get("alert_longer_than_usual"),
            "no_success_within": data.get("alert_no_success_within"),
        }
        try:
            data["alert"] = validation.check_alert(given)
        except validation.InputError as exc:
            name = {"alert.on": "alert_on"}.get(exc.field, "alert_" + exc.field.split(".")[-1].split("[")[0])
            self.add_error(name if name in self.fields else "alert_to", str(exc))
            return
        if not given["to"]:
            self.add_error("alert_to", _("Give at least one destination, or choose 'none'."))

    def clean_lock(self) -> str | None:
        return cast("str | None", self._checked("lock", validation.check_lock))

    def clean_calendars(self) -> tuple[str, ...]:
        return cast(tuple[str, ...], self._checked("calendars", validation.check_calendars))

    def _checked(self, name: str, check: Any) -> Any:
        value = self.cleaned_data.get(name)
        try:
            return check(value)
        except validation.InputError as exc:
            raise forms.ValidationError(str(exc), code=exc.code) from None

    def _clean_placement(self, data: dict[str, Any]) -> None:
        self.placement = Placement()
        backend, queue = (data.get("task_backend") or "").strip(), (data.get("task_queue") or "").strip()
        if data.get("runs_in") != RunsIn.TASKS:
            backend = queue = ""  # kept from an earlier choice of task workers; they no longer apply
        try:
            self.placement = Placement.build(data.get("runs_in") or RunsIn.THREADS, backend, queue)
            if self.placement.runs_in == RunsIn.TASKS:
                declarations.check_task_placement(self.placement)
        except ValueError as exc:
            # The message starts with what is wrong: "task_backend 'x' …", "task_queue 'y' …".
            field = next(
                (name for name in ("task_backend", "task_queue") if str(exc).startswith(name)), "runs_in"
            )
            self.add_error(field, str(exc))

    def _spec(self, kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
        spec: dict[str, Any] = {}
        if kind == "cron":
            if not data.get("cron") and self._has_fields_only_cron():
                return None  # a schedule with seconds has no crontab line; left as it is
            if not data.get("cron"):
                raise ScheduleError(str(_("Enter a cron expression.")))
            spec["cron"] = data["cron"].strip()
        elif kind == "interval":
            if not data.get("every"):
                raise ScheduleError(str(_("Enter how often, a whole number of at least 1.")))
            spec["interval"] = {data.get("unit") or "minutes": data["every"]}
        else:
            run_at = data.get("run_at")
            if run_at is None:
                raise ScheduleError(str(_("Enter the date and time to run at.")))
            if run_at <= timezone.now():
                raise ScheduleError(str(_("The date and time must be in the future.")))
            return {"date": run_at.isoformat()}
        if data.get("time_zone"):
            spec["timezone"] = data["time_zone"].strip()
        if data.get("jitter"):
            spec["jitter"] = data["jitter"]
        return spec

    def _has_fields_only_cron(self) -> bool:
        trigger = self.current_trigger
        return isinstance(trigger, CronTrigger) and crontab_of(trigger) is None

    def options(self) -> dict[str, Any]:
        return {
            "max_instances": self.cleaned_data["max_instances"],
            "coalesce": self.cleaned_data["coalesce"],
            "misfire_grace_time": self.cleaned_data["misfire_grace_time"],
            "executor": self.placement.alias,
            "timeout": self.cleaned_data["timeout"],
            **{name: self.cleaned_data[name] for name in validation.RETRY_OPTION_NAMES},
            "calendars": self.cleaned_data["calendars"],
            "overlap": self.cleaned_data["overlap"] or DEFAULT_POLICY.overlap,
            "lock": self.cleaned_data["lock"],
            "alert": self.cleaned_data.get("alert"),
        }


def alert_initial(alert: AlertPolicy | None) -> dict[str, Any]:
    """Form values for a job's alert policy (None: the site's)."""
    if alert is None:
        return {"alerts": "site"}
    if not alert.to:
        return {"alerts": "off"}
    return {
        "alerts": "own",
        "alert_to": "\n".join(alert.to),
        "alert_on": list(alert.on),
        "alert_after_failures": alert.after_failures,
        "alert_longer_than": alert.longer_than,
        "alert_longer_than_usual": alert.longer_than_usual,
        "alert_no_success_within": alert.no_success_within,
    }


def initial_values(state: dict[str, Any]) -> dict[str, Any]:
    """Form values for a stored job's schedule and options."""
    values: dict[str, Any] = {
        "max_instances": state.get("max_instances"),
        "coalesce": state.get("coalesce"),
        "misfire_grace_time": state.get("misfire_grace_time"),
    }
    placement = Placement.of(state.get("executor", DEFAULT_ALIAS))
    values.update(runs_in=placement.runs_in, task_backend=placement.backend, task_queue=placement.queue)
    try:
        spec = spec_of(state["trigger"])
    except (KeyError, ScheduleError):
        return values
    if "date" in spec:
        moment = dt.datetime.fromisoformat(spec["date"])
        if timezone.is_naive(moment):  # a date written without an offset: wall time in the job's zone
            moment = resolve_wall_time(moment, job_zone(spec.get("timezone")))
        values.update(kind="date", run_at=timezone.localtime(moment))
        return values
    values.update(time_zone=spec.get("timezone", ""), jitter=spec.get("jitter"))
    if "interval" in spec:
        seconds = int(dt.timedelta(**spec["interval"]).total_seconds())
        unit, size = next((unit, size) for unit, size in UNIT_SECONDS if seconds % size == 0)
        values.update(kind="interval", every=seconds // size, unit=unit)
    else:
        values.update(kind="cron", cron=spec["cron"] if isinstance(spec["cron"], str) else "")
    return values


class JobAddForm(JobScheduleForm):
    """A new job, made only from functions the code declares schedulable, with JSON arguments."""

    function = forms.ChoiceField(label=_("Function"), help_text=_("Functions the code declares schedulable."))
    job_id = forms.CharField(label=_("Job id"), max_length=255)
    job_name = forms.CharField(label=_("Name"), max_length=255, required=False)
    args = BoundedJSONField(
        label=_("Arguments"), initial=list, required=False, help_text=_('A JSON list: [1, "a"]')
    )
    kwargs = BoundedJSONField(
        label=_("Keyword arguments"), initial=dict, required=False, help_text=_('A JSON object: {"days": 7}')
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["function"]).choices = [
            (ref, f"{name} ({ref})") for ref, name in sorted(declarations.schedulables.items())
        ]
        if not self.is_bound:
            self.initial.update(kind="interval", every=1, unit="hours", **settings.JOB_DEFAULTS)

    def clean_job_id(self) -> str:
        job_id = cast(str, self._checked("job_id", validation.job_id)).strip()
        if DjangoJob.objects.filter(id=job_id).exists() or job_id in declarations.registry:
            raise forms.ValidationError(_("A job with this id exists already."))
        return job_id

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "args" in self.errors or "kwargs" in self.errors:
            return data  # the arguments could not be read: nothing to bind to the signature
        func_ref = data.get("function")
        args = [] if data.get("args") is None else data["args"]
        kwargs = {} if data.get("kwargs") is None else data["kwargs"]
        if not isinstance(args, list):
            self.add_error("args", _("Enter a JSON list."))
        elif not isinstance(kwargs, dict):
            self.add_error("kwargs", _("Enter a JSON object."))
        elif func_ref:
            function = ref_to_obj(func_ref)
            try:
                inspect.signature(function).bind(*args, **kwargs)
            except TypeError as exc:
                self.add_error(
                    "args",
                    _("These arguments do not fit %(function)s%(signature)s: %(error)s")
                    % {
                        "function": func_ref,
                        "signature": inspect.signature(function),
                        "error": validation.signature_error(exc),
                    },
                )
        return data


class RunArgumentsForm(forms.Form):
    """Arguments for one run now, instead of the job's own; checked by ``control.run_now``."""

    args = BoundedJSONField(
        label=_("Arguments"),
        required=False,
        help_text=_('A JSON list: [1, "a"]. Empty: the job\'s own.'),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )
    kwargs = BoundedJSONField(
        label=_("Keyword arguments"),
        required=False,
        help_text=_('A JSON object: {"days": 7}. Empty: the job\'s own.'),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )
    # Shown only while the scheduler is paused for maintenance (see JobAdmin.run_with_arguments_view).
    force = forms.BooleanField(
        label=_("Run anyway"),
        required=False,
        help_text=_("The scheduler is paused for maintenance: tick to run this job all the same."),
    )

    @staticmethod
    def initial_for(state: dict[str, Any]) -> dict[str, Any]:
        """The job's own arguments, to start from; none where they are not JSON (added in code)
        or cannot be read (a broken job, whose run is then refused naming its function)."""
        args, kwargs = state.get("args", ()), state.get("kwargs", {})
        try:
            json.dumps([args, kwargs])
        except (TypeError, ValueError):
            return {}
        return {"args": list(args), "kwargs": dict(kwargs)}
