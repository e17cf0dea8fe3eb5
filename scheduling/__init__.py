"""Scheduled jobs for Django sites, on APScheduler and django-apscheduler's job store."""

from scheduling.context import current_run
from scheduling.declarations import job, schedulable

__all__ = ["current_run", "job", "schedulable"]
