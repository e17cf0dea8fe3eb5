"""URLs to include in a site: ``path("scheduling/", include("scheduling.urls"))``."""

from django.urls import path

from scheduling import views

app_name = "scheduling"
urlpatterns = [path("health/", views.health, name="health")]
