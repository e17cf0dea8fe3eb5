"""Jobs of a site scheduled with plain django-apscheduler, as its README (0.7) writes them.

They live at module level because ``DjangoJobStore`` pickles a reference to the function, which
the scheduler that takes over must import again.
"""

from __future__ import annotations

from django_apscheduler import util
from django_apscheduler.models import DjangoJobExecution


def my_job() -> None:
    """The README's placeholder job: succeeds, does nothing."""


def failing_job() -> None:
    raise RuntimeError("the legacy job fails on purpose")


@util.close_old_connections
def delete_old_job_executions(max_age: int = 604_800) -> None:
    """The README's weekly clean-up of django-apscheduler's own history."""
    DjangoJobExecution.objects.delete_old_job_executions(max_age)
