"""The admin: jobs (read state, write intent), execution history, schedulers, API tokens, calendars.

django_apscheduler's own admin is unregistered: its "run" action executes jobs inside the web
request, and its history pages show a table this app no longer writes.
"""

from django.contrib import admin
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from scheduling.admin import calendars, history, jobs, tokens

for model in (DjangoJob, DjangoJobExecution):
    if admin.site.is_registered(model):
        admin.site.unregister(model)

# The scheduler status panel on the admin index, unless the site has its own index template.
if admin.site.index_template is None:
    admin.site.index_template = "admin/scheduling/index.html"

__all__ = ["calendars", "history", "jobs", "tokens"]
