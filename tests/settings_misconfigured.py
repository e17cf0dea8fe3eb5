"""Test settings with the mistakes the system checks are for, picked by SCHEDULING_TEST_MISTAKE."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

MISTAKE = os.environ["SCHEDULING_TEST_MISTAKE"]
if MISTAKE == "scheduler-in-ready":
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.support.rogue_app"]
elif MISTAKE == "no-django-apscheduler":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django_apscheduler"]
elif MISTAKE == "no-scheduling":  # the urls still include scheduling.urls
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "scheduling"]
elif MISTAKE == "apps-out-of-order":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django_apscheduler"] + ["django_apscheduler"]
