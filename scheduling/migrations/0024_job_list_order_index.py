"""An index on the job store in the order the admin's job list and the due-jobs query read it
(next run time, then id).

django-apscheduler indexes ``next_run_time`` alone: ordered by it and by id, with 100,000 jobs
PostgreSQL read the whole table and sorted it for each page of the admin's job list, evaluating
every column of the page for every job on the way (132 ms against 2 ms with this index).
"""

from django.db import migrations

INDEX = "scheduling_job_order"
TABLE = "django_apscheduler_djangojob"


def create_index(apps, schema_editor):
    schema_editor.execute(f"CREATE INDEX {INDEX} ON {TABLE} (next_run_time, id)")


def drop_index(apps, schema_editor):
    on = f" ON {TABLE}" if schema_editor.connection.vendor == "mysql" else ""
    schema_editor.execute(f"DROP INDEX {INDEX}{on}")


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0023_change_notifications"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, atomic=False),  # MariaDB: DDL is not transactional
    ]
