"""Bring the history a site recorded with plain django-apscheduler into our execution table.

Its rows stay where they are; copies are made once, so nothing a site had is lost or hidden.
"""

from datetime import UTC, datetime

from django.db import migrations

STATUSES = {
    "Executed": "succeeded",
    "Error!": "failed",
    "Missed!": "missed",
    "Max instances!": "skipped",
    # A run django-apscheduler left "started" was interrupted: nothing will finish it now.
    "Started execution": "interrupted",
}
BATCH = 1000


def import_history(apps, schema_editor):
    DjangoJobExecution = apps.get_model("django_apscheduler", "DjangoJobExecution")
    Execution = apps.get_model("scheduling", "Execution")
    rows = DjangoJobExecution.objects.order_by("pk").iterator(chunk_size=BATCH)
    batch = []
    for row in rows:
        batch.append(
            Execution(
                job_id=row.job_id,
                status=STATUSES.get(row.status, "failed"),
                origin="imported",
                scheduled_at=row.run_time,
                finished_at=datetime.fromtimestamp(float(row.finished), UTC) if row.finished else None,
                exception=row.exception or "",
                traceback=row.traceback or "",
            )
        )
        if len(batch) >= BATCH:
            Execution.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Execution.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0001_initial"),
        ("django_apscheduler", "0009_djangojobexecution_unique_job_executions"),
    ]

    operations = [migrations.RunPython(import_history, migrations.RunPython.noop, elidable=True)]
