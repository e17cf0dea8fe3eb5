"""Triggers that tell a listening scheduler, through pg_notify, that jobs, run requests, the
maintenance pause or a pending retry changed (PostgreSQL only: a no-op elsewhere).

The channel names are the ones scheduling.runtime.notifications listens on; they are written
out here, not imported, because a migration must keep meaning what it meant when applied.
"""

from django.db import migrations, models

FUNCTION = """
CREATE OR REPLACE FUNCTION scheduling_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$
"""
# One statement-level trigger per table: a statement that changes 10,000 rows sends one
# notification, and PostgreSQL folds identical ones of a transaction into one at commit.
STATEMENT_TRIGGERS = {
    "django_apscheduler_djangojob": "scheduling_jobs",
    "scheduling_runrequest": "scheduling_run_requests",
    "scheduling_maintenance": "scheduling_maintenance",
}
# A retry is set by the UPDATE that writes a failed run's outcome, among every other outcome:
# a row-level trigger whose WHEN clause picks out the rows given a retry costs no function call
# for the others, where a statement-level one would notify at every outcome written.
RETRY_TRIGGER = """
CREATE OR REPLACE TRIGGER scheduling_notify_retry
AFTER UPDATE OF retry_at ON scheduling_execution
FOR EACH ROW WHEN (NEW.retry_at IS NOT NULL AND NEW.retry_at IS DISTINCT FROM OLD.retry_at)
EXECUTE FUNCTION scheduling_notify('scheduling_jobs')
"""


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    for table, channel in STATEMENT_TRIGGERS.items():
        schema_editor.execute(
            f"CREATE OR REPLACE TRIGGER scheduling_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION scheduling_notify('{channel}')"
        )
    schema_editor.execute(RETRY_TRIGGER)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in STATEMENT_TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS scheduling_notify ON {table}")
    schema_editor.execute("DROP TRIGGER IF EXISTS scheduling_notify_retry ON scheduling_execution")
    schema_editor.execute("DROP FUNCTION IF EXISTS scheduling_notify()")


class Migration(migrations.Migration):

    dependencies = [
        ('scheduling', '0022_alert_attempts'),
        ('django_apscheduler', '0009_djangojobexecution_unique_job_executions'),
    ]

    operations = [
        migrations.AddField(
            model_name='schedulerinstance',
            name='changes',
            field=models.CharField(blank=True, default='', help_text='Pushed by the database (LISTEN/NOTIFY), or polled, and why.', max_length=255, verbose_name='changes'),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
