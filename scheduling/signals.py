"""Signals a site can connect to for alerting or metrics.

Each is sent with ``sender`` = the job id and ``execution`` = the scheduling.Execution row. They are
sent with ``send_robust``: a receiver that raises is logged, never breaks the scheduler.
"""

from django.dispatch import Signal

job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()
job_missed = Signal()
