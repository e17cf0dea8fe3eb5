"""Scheduled jobs for Django sites, on APScheduler and django-apscheduler's job store."""

from scheduling.calendars import calendar
from scheduling.context import current_run
from scheduling.declarations import job, schedulable

__all__ = ["calendar", "current_run", "job", "schedulable"]
