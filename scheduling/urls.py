"""URLs to include in a site: ``path("scheduling/", include("scheduling.urls"))``.

The health endpoint answers anyone; the API needs a logged-in user or an API token; the metrics
answer whom ``SCHEDULING_METRICS_ACCESS`` names (404 while it is unset).
"""

from django.urls import path, re_path

from scheduling import api, openapi, views

app_name = "scheduling"
urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
    path("api/openapi.json", openapi.document, name="api-openapi"),
    path("api/status/", api.status, name="api-status"),
    path("api/maintenance/", api.maintenance, name="api-maintenance"),
    path("api/calendars/", api.calendar_list, name="api-calendars"),
    path("api/calendars/<path:name>/", api.calendar_detail, name="api-calendar"),
    path("api/runs/", api.run_list, name="api-runs"),
    path("api/runs/<int:run_id>/", api.run_detail, name="api-run"),
    path("api/runs/<int:run_id>/cancel/", api.cancel, name="api-run-cancel"),
    path("api/jobs/", api.job_list, name="api-jobs"),
    # Job ids may contain slashes; the action routes come first so they are not read as ids.
    path("api/jobs/<path:job_id>/run/", api.run, name="api-job-run"),
    path("api/jobs/<path:job_id>/pause/", api.pause, name="api-job-pause"),
    path("api/jobs/<path:job_id>/resume/", api.resume, name="api-job-resume"),
    path("api/jobs/<path:job_id>/reschedule/", api.reschedule, name="api-job-reschedule"),
    path("api/jobs/<path:job_id>/", api.job_detail, name="api-job"),
    # Last: any other URL under api/ (a job id with a newline, a run id that is not a number)
    # answers JSON too, not Django's HTML 404 page.
    re_path(r"^api/(?P<rest>[\s\S]*)$", api.not_found, name="api-not-found"),
]
