"""A site that uses django-health-check's view with our scheduler check beside its database check."""

from django.urls import path
from health_check.views import HealthCheckView

urlpatterns = [
    path(
        "ht/",
        HealthCheckView.as_view(checks=["health_check.checks.Database", "scheduling.healthchecks.Scheduler"]),
    ),
]
