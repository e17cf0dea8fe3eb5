from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class SchedulingConfig(AppConfig):
    name = "scheduling"
    verbose_name = _("Scheduling")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from scheduling import checks
        from scheduling.conf import settings
        from scheduling.history import alerts

        checks.register()
        alerts.connect()
        # Like admin.py: every installed app's jobs.py declares its jobs on import.
        autodiscover_modules("jobs")
        for module in settings.MODULES:
            importlib.import_module(module)
        if settings.EMBEDDED:
            from django.core.signals import request_started

            from scheduling.runtime.embedded import start_on_first_request

            request_started.connect(start_on_first_request, dispatch_uid="scheduling-embedded")
