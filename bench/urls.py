"""The demo's URLs plus django-apscheduler's own admin on a second site, for the stock rows.

Our app unregisters django-apscheduler's admin from the default site; the stock changelists are
timed on a site of their own so that both can be measured in one process.
"""

from django.contrib import admin
from django.urls import path
from django_apscheduler.admin import DjangoJobAdmin, DjangoJobExecutionAdmin
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from config.urls import urlpatterns as demo_urlpatterns

stock_site = admin.AdminSite(name="stock_admin")
stock_site.register(DjangoJob, DjangoJobAdmin)
stock_site.register(DjangoJobExecution, DjangoJobExecutionAdmin)

urlpatterns = [*demo_urlpatterns, path("stock-admin/", stock_site.urls)]
