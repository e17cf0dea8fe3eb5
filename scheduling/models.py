"""Our tables beside django_apscheduler's ``DjangoJob`` (which keeps the pickled APScheduler jobs).

Neither table has a foreign key to ``DjangoJob``: a job's history and our knowledge of where it
came from must survive the job row (a finished one-off job is removed by APScheduler; an operator
may delete a job), where django_apscheduler's cascade would take the history with it.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from scheduling.conf import settings
from scheduling.placement import RunsIn

# Without these, Django fails below with a less helpful "isn't in INSTALLED_APPS", and no system
# check could say it better: checks run only once the models have loaded.
if not apps.is_installed("scheduling"):
    raise ImproperlyConfigured(
        "'scheduling' is not in INSTALLED_APPS, but its models are imported (by scheduling.urls, the "
        "admin or a job module?). Add 'django_apscheduler' and then 'scheduling' to INSTALLED_APPS."
    )
if not apps.is_installed("django_apscheduler"):
    raise ImproperlyConfigured(
        "The 'scheduling' app needs 'django_apscheduler' in INSTALLED_APPS, listed before "
        "'scheduling': its DjangoJob table is where the jobs live."
    )

from django_apscheduler.models import DjangoJob


class Job(DjangoJob):
    """A job in django_apscheduler's store, as the admin shows and controls it."""

    def __str__(self) -> str:
        return self.id

    class Meta:
        proxy = True
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        permissions = [
            ("run_job", _("Can run jobs now")),
            ("pause_job", _("Can pause and resume jobs")),
            ("change_schedule", _("Can change job schedules")),
            ("cancel_run", _("Can cancel running runs")),
        ]


class ScheduledJob(models.Model):
    """Where a stored job comes from and how it stands against its declaration in code."""

    class Source(models.TextChoices):
        CODE = "code", _("Declared in code")
        EXTERNAL = "external", _("Added outside the code")

    id = models.CharField(_("job id"), max_length=255, primary_key=True)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    func_ref = models.CharField(_("function"), max_length=255, blank=True)
    name = models.CharField(_("name"), max_length=255, blank=True)
    declaration = models.JSONField(
        _("declaration"), null=True, blank=True, help_text=_("What the code declares; used to reset the job.")
    )
    declared_fingerprint = models.CharField(max_length=64, blank=True)
    stored_fingerprint = models.CharField(
        max_length=64, blank=True, help_text=_("What the last sync wrote, to notice changes made since.")
    )
    # The stored state the last sync wrote or found unchanged, less its next run time
    # (scheduling.store.state_digest): a restart loads only the jobs whose state differs from it.
    state_digest = models.CharField(max_length=32, blank=True, editable=False)
    overridden_at = models.DateTimeField(
        _("schedule overridden at"),
        null=True,
        blank=True,
        help_text=_("Changed outside the code; kept until reset."),
    )
    undeclared_at = models.DateTimeField(_("removed from code at"), null=True, blank=True)
    paused_by_sync = models.BooleanField(
        default=False, help_text=_("Paused because the code no longer declares it; resumed if it returns.")
    )
    run_policy = models.JSONField(
        _("run policy"),
        default=dict,
        blank=True,
        help_text=_("Run options beyond APScheduler's (see scheduling.policy), only those set."),
    )
    import_error = models.TextField(_("import error"), blank=True)
    import_error_at = models.DateTimeField(_("broken since"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("scheduled job")
        verbose_name_plural = _("scheduled jobs")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.id


class SchedulerInstanceQuerySet(models.QuerySet["SchedulerInstance"]):
    def alive(self) -> SchedulerInstanceQuerySet:
        """Schedulers that have not stopped and have beaten recently enough."""
        cutoff = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
        return self.filter(stopped_at__isnull=True, last_beat__gte=cutoff)


class SchedulerInstance(models.Model):
    """One ``runscheduler`` process, with its heartbeat, so other processes can tell it is alive."""

    class Role(models.TextChoices):
        STANDBY = "standby", _("Standby")
        ACTIVE = "active", _("Active")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.STANDBY)
    started_at = models.DateTimeField(_("running since"), default=timezone.now)
    last_beat = models.DateTimeField(_("last heartbeat"), default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(_("stopped at"), null=True, blank=True)
    standby_reason = models.TextField(
        _("why it stands by"),
        blank=True,
        help_text=_("Set when it held the lease but could not start scheduling; empty otherwise."),
    )
    # Who the process is beyond its pid, so that another process can prove it dead (see
    # scheduling.identity); empty where /proc could not be read and on rows of older versions.
    boot_id = models.CharField(_("boot id"), max_length=64, blank=True, default="")
    pid_namespace = models.CharField(_("PID namespace"), max_length=64, blank=True, default="")
    process_started = models.BigIntegerField(
        _("process start time"), null=True, blank=True, help_text=_("Clock ticks since boot.")
    )
    # How the scheduler learns of changes other processes make, as it last found out (see
    # scheduling.runtime.notifications): shown in the status, so a site behind a pooler sees why.
    changes = models.CharField(
        _("changes"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Pushed by the database (LISTEN/NOTIFY), or polled, and why."),
    )

    objects = SchedulerInstanceQuerySet.as_manager()

    class Meta:
        verbose_name = _("scheduler")
        verbose_name_plural = _("schedulers")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class Lease(models.Model):
    """The right to schedule on this database: one holder at a time, until ``expires_at``.

    ``epoch`` grows by one at every take-over: the writes of a dispatch pass are conditioned on
    the holder, the epoch and ``expires_at`` by the database's clock (see scheduling.fencing).
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.UUIDField(null=True, blank=True)
    epoch = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("lease")

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at}"


class ExecutionQuerySet(models.QuerySet["Execution"]):
    """Which runs are in which state, and the changes of state, each written once.

    Every change is one UPDATE conditioned on the state it leaves (like django-tasks-db's
    ``DBTaskResult.claim()``), so of two writers racing for a run, one wins and the other is told.
    """

    def enqueued(self) -> ExecutionQuerySet:
        """Runs waiting for a task worker to take them."""
        return self.filter(status=Execution.Status.ENQUEUED)

    def running(self) -> ExecutionQuerySet:
        """Runs going on: running, or running past their timeout."""
        return self.filter(status__in=RUNNING_STATES)

    def unfinished(self) -> ExecutionQuerySet:
        """Runs that may still start or end: enqueued or running."""
        return self.filter(status__in=UNFINISHED)

    def finished(self) -> ExecutionQuerySet:
        """Runs whose row will not change again (but for a late outcome kept beside): not a
        failed run whose retry is pending, which pruning must leave for the retry to take."""
        return self.exclude(status__in=UNFINISHED).exclude(retry_at__isnull=False)

    def listed(self) -> ExecutionQuerySet:
        """Runs to list, without their output (up to SCHEDULING_OUTPUT_LIMIT characters each),
        which only a run's own page shows."""
        return self.defer("output")

    def completed(self) -> ExecutionQuerySet:
        """Runs that ran to their end, succeeded or failed: not missed, skipped or interrupted."""
        return self.filter(status__in=[Execution.Status.SUCCEEDED, Execution.Status.FAILED])

    def interrupted(self) -> ExecutionQuerySet:
        return self.filter(status=Execution.Status.INTERRUPTED)

    def in_task_workers(self) -> ExecutionQuerySet:
        """Runs handed to task workers, which live on without the scheduler that handed them."""
        return self.filter(ran_in=RunsIn.TASKS)

    def in_scheduler(self) -> ExecutionQuerySet:
        """Runs in a scheduler's own threads or process pool, which end with it."""
        return self.exclude(ran_in=RunsIn.TASKS)

    def of_instance(self, instance: SchedulerInstance | None) -> ExecutionQuerySet:
        """Runs recorded by the scheduler ``instance`` (None: by a process without a row)."""
        return self.filter(instance=instance)

    def elsewhere(self, instance: SchedulerInstance | None) -> ExecutionQuerySet:
        """Runs not recorded by ``instance``: by other schedulers, or by processes without a row."""
        return self.exclude(instance=instance)

    def awaiting_retry(self) -> ExecutionQuerySet:
        """Failed runs whose next attempt is still to be taken (see scheduling.history.attempts),
        and fires queued behind a run still going (overlap policy): both wait for a slot."""
        return self.filter(retry_at__isnull=False)

    def start_queued(self, status: str, **where: Any) -> int:
        """Start a fire queued behind a run of its job (overlap="queue"): it becomes running (or
        enqueued) where ``where`` says; 0 if another scheduler started or someone cancelled it."""
        return self.filter(status=Execution.Status.QUEUED, retry_at__isnull=False).update(
            status=status, retry_at=None, **where
        )

    def take_retry(self) -> int:
        """Mark a failed run's next attempt as taken; 0 if another scheduler took it first."""
        return self.awaiting_retry().update(retry_at=None)

    def mark_interrupted(self, reason: str) -> int:
        """Record the runs still running as interrupted, for ``reason``; returns how many."""
        return self.running().update(
            status=Execution.Status.INTERRUPTED, finished_at=timezone.now(), exception=reason
        )

    def claim(self, task_id: str, hostname: str, pid: int, started_at: datetime) -> bool:
        """Mark an enqueued run as running in the worker ``hostname``:``pid``; False if it had left
        the enqueued state (another worker took it, or it expired)."""
        return bool(
            self.enqueued().update(
                status=Execution.Status.RUNNING,
                started_at=started_at,
                hostname=hostname,
                pid=pid,
                task_id=task_id,
            )
        )

    def end_unstarted(
        self,
        status: str,
        message: str,
        traceback: str = "",
        finished_at: datetime | None = None,
        **where_ended: Any,
    ) -> int:
        """Record enqueued runs as ended without starting (missed, refused, never taken), with
        ``where_ended`` (hostname, pid, task_id) when a worker ends them; returns how many.
        A run that left the enqueued state meanwhile is left alone."""
        return self.enqueued().update(
            status=status,
            finished_at=finished_at or timezone.now(),
            exception=message,
            traceback=traceback,
            **where_ended,
        )


class Execution(models.Model):
    """One attempt at one fire of one job: exactly one row per job, scheduled time and attempt."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued behind a run still going")
        ENQUEUED = "enqueued", _("Enqueued for a task worker")
        RUNNING = "running", _("Running")
        OVERRUNNING = "overrunning", _("Running past its timeout")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        TIMED_OUT = "timed_out", _("Timed out")
        CANCELLED = "cancelled", _("Cancelled")
        MISSED = "missed", _("Missed")
        SKIPPED = "skipped", _("Skipped")
        INTERRUPTED = "interrupted", _("Interrupted")

    class Origin(models.TextChoices):
        SCHEDULE = "schedule", _("Schedule")
        MANUAL = "manual", _("Manual request")
        IMPORTED = "imported", _("Imported from django-apscheduler")

    id = models.BigAutoField(primary_key=True)
    job_id = models.CharField(_("job id"), max_length=255)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    origin = models.CharField(_("started by"), max_length=16, choices=Origin.choices, default=Origin.SCHEDULE)
    requested_by = models.CharField(_("requested by"), max_length=150, blank=True)
    scheduled_at = models.DateTimeField(_("scheduled for"))
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    duration = models.FloatField(_("duration (s)"), null=True, blank=True, help_text=_("Of the run itself."))
    exception = models.TextField(_("exception"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    output = models.TextField(
        _("output"),
        blank=True,
        default="",
        db_default="",
        help_text=_(
            "What the run logged and printed, capped at SCHEDULING_OUTPUT_LIMIT characters (its "
            "first and last half when it wrote more)."
        ),
    )
    ran_in = models.CharField(_("ran in"), max_length=16, choices=RunsIn.choices, default=RunsIn.THREADS)
    task_id = models.CharField(
        _("task id"), max_length=255, blank=True, help_text=_("Given by the tasks framework's backend.")
    )
    args = models.JSONField(
        _("arguments"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The positional arguments of a run requested with its own; empty: the job's."),
    )
    kwargs = models.JSONField(
        _("keyword arguments"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The keyword arguments of a run requested with its own; empty: the job's."),
    )
    call = models.JSONField(
        _("what to run"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "For a run handed to task workers: the job's function, arguments and misfire grace time "
            "when it fired, used by the worker if the job has left the store by then."
        ),
    )
    hostname = models.CharField(_("host"), max_length=255, blank=True)
    pid = models.PositiveIntegerField(_("process id"), null=True, blank=True)
    instance = models.ForeignKey(
        SchedulerInstance,
        verbose_name=_("scheduler"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    pass_id = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "The dispatch pass that wrote the row: a write retried after a lost reply finds its own rows."
        ),
    )
    # db_default: rows written by a release without these columns (a rolling upgrade) are valid.
    attempt = models.PositiveSmallIntegerField(
        _("attempt"),
        default=1,
        db_default=1,
        help_text=_("1 for a fire's first run; a retry of a failed one counts on."),
    )
    attempts = models.PositiveSmallIntegerField(
        _("attempts allowed"),
        default=1,
        db_default=1,
        help_text=_("How often the fire may run: once plus its retries."),
    )
    retry_at = models.DateTimeField(
        _("next attempt at"),
        null=True,
        blank=True,
        help_text=_("Set on a failed run whose next attempt waits for its time; cleared as it starts."),
    )
    queued = models.BooleanField(
        _("queued"),
        default=False,
        db_default=False,
        help_text=_("The fire waited for a run of its job still going to end (overlap policy)."),
    )
    enqueued_at = models.DateTimeField(
        _("enqueued at"),
        null=True,
        blank=True,
        help_text=_(
            "When the run was handed to task workers: a retry, a queued fire or a run requested now "
            "keeps its fire's scheduled time, so its wait for a worker counts from here."
        ),
    )
    cancel_requested_at = models.DateTimeField(_("cancel requested at"), null=True, blank=True)
    cancel_requested_by = models.CharField(
        _("cancel requested by"), max_length=150, blank=True, default="", db_default=""
    )
    late_outcome = models.JSONField(
        _("outcome after it was recorded interrupted"),
        null=True,
        blank=True,
        help_text=_("The run went on after it was recorded interrupted; this is how it ended."),
    )

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        verbose_name = _("execution")
        verbose_name_plural = _("executions")
        ordering = ["-scheduled_at"]
        constraints = [
            # The database, not timing, guarantees one execution per job, fire time and attempt.
            models.UniqueConstraint(
                fields=["job_id", "scheduled_at", "attempt"], name="scheduling_one_execution_per_attempt"
            ),
        ]
        indexes = [
            # Pending retries: the earliest (read with the due jobs) and those due.
            models.Index(fields=["retry_at"], name="scheduling_exec_retry_idx"),
            models.Index(fields=["scheduled_at"], name="scheduling_exec_sched_idx"),
            models.Index(fields=["status"], name="scheduling_exec_status_idx"),
        ]

    # Set where the run starts, in memory only (see scheduling.runs.live): when its timeout
    # passes, on time.monotonic() (the same clock in every process of the machine), and the flag
    # the scheduler raises when someone asks to cancel it.
    _deadline: float | None = None
    _cancel: threading.Event | None = None
    _cancel_checked = 0.0

    def __str__(self) -> str:
        return f"{self.job_id} @ {self.scheduled_at:%Y-%m-%d %H:%M:%S} ({self.status})"

    def __getstate__(self) -> dict[str, Any]:
        # A run handed to a child process crosses as a pickle; an Event does not pickle.
        state = dict(super().__getstate__())
        state.pop("_cancel", None)
        return state

    @property
    def deadline_passed(self) -> bool:
        """True once the job's timeout has passed, for a job that can stop early (``timeout=``)."""
        return self._deadline is not None and time.monotonic() >= self._deadline

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this run, for a job that can stop early.

        In the scheduler's threads it is a flag the scheduler raises; in a child process or a task
        worker the row is read again, at most once a second.
        """
        if self._cancel is not None:
            return self._cancel.is_set()
        stale = time.monotonic() - self._cancel_checked >= 1
        if self.cancel_requested_at is None and self.pk is not None and stale:
            self._cancel_checked = time.monotonic()
            self.cancel_requested_at = (
                Execution.objects.filter(pk=self.pk).values_list("cancel_requested_at", flat=True).first()
            )
        return self.cancel_requested_at is not None


RUNNING_STATES = (Execution.Status.RUNNING, Execution.Status.OVERRUNNING)
"""The states of a run whose code is going on (or may be: a thread cannot be stopped)."""

HANDED_OVER = (Execution.Status.ENQUEUED, *RUNNING_STATES)
"""The states of a run handed to where it runs: waiting for a task worker, or running."""

UNFINISHED = (Execution.Status.QUEUED, *HANDED_OVER)
"""The states of a run still to end; such rows are never pruned."""


class RunLock(models.Model):
    """A lock across jobs (a job's ``lock=`` option), taken by one run: jobs naming the same lock
    never run at the same time, whichever scheduler or worker runs them.

    The name's key is unique, so the database refuses a second holder: a digest of the name, so
    that every database compares names byte for byte (MariaDB's default collation would take
    "Café" and "cafe" for one lock, PostgreSQL for two). The row names its run by the
    history's own key (job, scheduled time, attempt), and the lock is held while that run is
    handed over — enqueued, running or overrunning — and free once its row says it ended: every
    way a run ends frees it with no write of its own, a run recorded interrupted after its
    scheduler or worker died included. A row whose run never got recorded (its taker crashed in
    between) frees itself the same way.
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=64, unique=True)  # see lock_key()
    name = models.CharField(_("lock"), max_length=100)
    job_id = models.CharField(_("job id"), max_length=255)
    scheduled_at = models.DateTimeField(_("scheduled for"))
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=1)
    taken_at = models.DateTimeField(_("taken at"), default=timezone.now)

    class Meta:
        verbose_name = _("run lock")
        verbose_name_plural = _("run locks")

    def __str__(self) -> str:
        return f"{self.name} taken by {self.job_id} @ {self.scheduled_at:%Y-%m-%d %H:%M:%S}"


class Alert(models.Model):
    """Something about a job that someone should hear of, raised once (see scheduling.history.alerts).

    ``key`` makes it once: the same failure, missed fire or silence raises no second alert,
    whichever process sees it. It is the SHA-256 of what the alert is about ("failure:<run>",
    "no_success:<job>:<since>"): a job id alone may be 255 characters, and MariaDB indexes no
    longer unique text. An alert about a failing or silent job stays ``open`` until the
    job succeeds again, which raises one *recovered* alert and closes them.
    """

    class Rule(models.TextChoices):
        FAILURE = "failure", _("Failed")
        MISSED = "missed", _("Missed a fire")
        SKIPPED = "skipped", _("Skipped a fire: a run was still going")
        LONG_RUN = "long_run", _("Running too long")
        NO_SUCCESS = "no_success", _("No success for too long")
        RECOVERED = "recovered", _("Recovered")

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=64, unique=True)
    job_id = models.CharField(_("job id"), max_length=255, db_index=True)
    rule = models.CharField(_("rule"), max_length=16, choices=Rule.choices)
    execution_id = models.BigIntegerField(_("run"), null=True, blank=True)
    message = models.TextField(_("message"))
    raised_at = models.DateTimeField(_("raised at"), default=timezone.now)
    open = models.BooleanField(_("open"), default=False, help_text=_("Waiting for the job to succeed again."))

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-raised_at", "-id"]
        indexes = [models.Index(fields=["open"], name="scheduling_alert_open_idx")]

    def __str__(self) -> str:
        return f"{self.job_id}: {self.message}"


class AlertDelivery(models.Model):
    """One alert to one destination: queued, tried with backoff until sent or given up."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting to be sent")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Given up")
        SUPPRESSED = "suppressed", _("Not sent: too soon after the last one (rate limit)")

    id = models.BigAutoField(primary_key=True)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    destination = models.CharField(_("to"), max_length=500)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True, db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("alert delivery")
        verbose_name_plural = _("alert deliveries")

    def __str__(self) -> str:
        return f"{self.alert} to {self.destination}: {self.status}"


class AlertAttempt(models.Model):
    """One try at sending a delivery: when, and the error that stopped it (none: it was sent).

    ``AlertDelivery`` holds where a delivery stands; this is its log, shown on the job's page,
    so that an operator sees every failed try of a mail server or webhook, not only the last.
    """

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(AlertDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField(_("attempt"))
    at = models.DateTimeField(_("tried at"))
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("alert delivery attempt")
        verbose_name_plural = _("alert delivery attempts")
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"{self.delivery} #{self.number}: {self.error or 'sent'}"


def lock_key(name: str) -> str:
    """The unique key of the lock ``name``: its SHA-256 in hex."""
    return hashlib.sha256(name.encode()).hexdigest()


class RunRequest(models.Model):
    """A request to run a job now (from the admin, a script), taken by the running scheduler.

    The scheduler deletes a request as it takes it, so the table only holds what is waiting and
    the check for new requests stays cheap; the run itself is recorded as an execution started
    manually by ``requested_by``.
    """

    job_id = models.CharField(_("job id"), max_length=255)
    requested_by = models.CharField(_("requested by"), max_length=150, blank=True)
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    # For this run only, instead of the job's own; None keeps the job's (checked by control.run_now).
    args = models.JSONField(_("arguments"), null=True, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), null=True, blank=True)
    force = models.BooleanField(
        _("forced"), default=False, help_text=_("Run even while the scheduler is paused for maintenance.")
    )

    class Meta:
        verbose_name = _("run request")
        verbose_name_plural = _("run requests")
        ordering = ["requested_at"]

    def __str__(self) -> str:
        return f"{self.job_id} requested by {self.requested_by or 'a script'}"


class MaintenanceQuerySet(models.QuerySet["Maintenance"]):
    def in_force(self, now: datetime) -> MaintenanceQuerySet:
        """The pause, if it is on at ``now``: a window whose ``until`` has passed is over."""
        return self.filter(Q(until__isnull=True) | Q(until__gt=now), on=True)


class Maintenance(models.Model):
    """The maintenance pause of every scheduler on this database: one row, written by operators.

    While it is on, no new run starts: each fire is recorded skipped with the reason, and a run
    requested without ``force`` is refused. Runs already going finish. It lifts itself at
    ``until``: every reader treats a pause whose ``until`` has passed as off, so nothing has to
    wake up to end it, and the next ``on`` or ``off`` overwrites the row.
    """

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    on = models.BooleanField(_("paused for maintenance"), default=False)
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    by = models.CharField(_("paused by"), max_length=150, blank=True)
    since = models.DateTimeField(_("since"), null=True, blank=True)
    until = models.DateTimeField(_("until"), null=True, blank=True, help_text=_("Lifts itself then."))

    objects = MaintenanceQuerySet.as_manager()

    class Meta:
        verbose_name = _("maintenance pause")
        verbose_name_plural = _("maintenance pauses")

    def __str__(self) -> str:
        # English: the admin's history (LogEntry.object_repr) stores it.
        return self.stored_text()

    def describe(self) -> str:
        """The pause in the active language, for the admin, the CLI and the API's ``text``:
        paused for maintenance (DB migration), by alice, until 2026-12-24 06:00 UTC"""
        values = {"reason": self.reason, "by": self.by, "until": self._until_text()}
        if self.by and self.until is not None:
            return gettext("paused for maintenance (%(reason)s), by %(by)s, until %(until)s") % values
        if self.by:
            return gettext("paused for maintenance (%(reason)s), by %(by)s") % values
        if self.until is not None:
            return gettext("paused for maintenance (%(reason)s), until %(until)s") % values
        return gettext("paused for maintenance (%(reason)s)") % values

    def stored_text(self) -> str:
        """:meth:`describe` in English, whatever the active language: what skipped runs and the
        admin's history store (README: Languages)."""
        text = f"paused for maintenance ({self.reason})"
        if self.by:
            text += f", by {self.by}"
        if self.until is not None:
            text += f", until {self._until_text()}"
        return text

    def _until_text(self) -> str:
        return f"{self.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if self.until is not None else ""

    @property
    def skip_message(self) -> str:
        """What a fire or a request that did not run because of the pause records (in English)."""
        return f"Skipped: {self.stored_text()}"


def maintenance_in_force(now: datetime | None = None) -> Maintenance | None:
    """The maintenance pause on at ``now`` (default: now), or None."""
    return Maintenance.objects.in_force(now or timezone.now()).first()


class ApiToken(models.Model):
    """A key for the HTTP API that acts as its user, with the user's permissions.

    Only a SHA-256 hash of the key is stored: the key is shown once, when it is created. Keys are
    random 256-bit strings, so a fast hash is enough (unlike passwords, they cannot be guessed).
    """

    user = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="scheduling_api_tokens",
    )
    name = models.CharField(_("name"), max_length=100, help_text=_("What uses it, e.g. 'deploy script'."))
    prefix = models.CharField(_("key starts with"), max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)

    key = ""  # not a field: the key, on the object that was just given one, to show it once

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Calendar(models.Model):
    """A named set of excluded periods: a job assigned to it does not run inside them.

    Declared in code (``scheduling.calendar``, written here at scheduler start and read-only in
    the admin) or made in the admin. Jobs name calendars in their run policy (``calendars``);
    the rule that decides whether an instant is excluded is ``scheduling.calendars``.
    """

    class Source(models.TextChoices):
        CODE = "code", _("declared in code")
        ADMIN = "admin", _("made in the admin")

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=255, blank=True)
    timezone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        help_text=_("Where its whole days begin and end, and what a weekend is; blank: the site's."),
    )
    weekdays_only = models.BooleanField(
        _("weekdays only"), default=False, help_text=_("Excludes every Saturday and Sunday.")
    )
    source = models.CharField(_("source"), max_length=10, choices=Source.choices, default=Source.ADMIN)

    class Meta:
        ordering = ["name"]
        verbose_name = _("calendar")
        verbose_name_plural = _("calendars")

    def __str__(self) -> str:
        return self.name


class CalendarPeriod(models.Model):
    """One excluded period of a calendar: a whole ``day`` in the calendar's zone, or ``start``
    to ``end`` (end excluded). A day is kept as a date, not as two instants, so it stays the day
    when the calendar's zone changes and lasts 23 or 25 hours across a clock change."""

    calendar = models.ForeignKey(
        Calendar, verbose_name=_("calendar"), on_delete=models.CASCADE, related_name="periods"
    )
    day = models.DateField(
        _("day"), null=True, blank=True, help_text=_("A whole day; or give start and end.")
    )
    start = models.DateTimeField(_("start"), null=True, blank=True)
    end = models.DateTimeField(
        _("end"), null=True, blank=True, help_text=_("Excluded up to, not at, this time.")
    )
    label = models.CharField(_("label"), max_length=100, blank=True, help_text=_("e.g. Christmas Eve"))

    class Meta:
        # Days, then ranges, each in time order: the same on every database (NULLs sort apart).
        ordering = [models.F("day").asc(nulls_last=True), models.F("start").asc(nulls_last=True), "pk"]
        verbose_name = _("excluded period")
        verbose_name_plural = _("excluded periods")
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(day__isnull=False, start__isnull=True, end__isnull=True)
                    | Q(day__isnull=True, start__isnull=False, end__isnull=False, end__gt=models.F("start"))
                ),
                name="scheduling_period_day_or_range",
            )
        ]

    def __str__(self) -> str:
        # In the active language: the admin shows it; its history stores it under
        # translation.override(None), in English.
        when = (
            f"{self.day}"
            if self.day
            else gettext("%(start)s to %(end)s") % {"start": self.start, "end": self.end}
        )
        return f"{when} ({self.label})" if self.label else when
