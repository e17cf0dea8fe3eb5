"""Scheduled jobs for Django sites, on APScheduler and django-apscheduler's job store."""

from scheduling.declarations import job, schedulable

__all__ = ["job", "schedulable"]
