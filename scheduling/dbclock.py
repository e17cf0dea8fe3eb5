"""The database's clock, for every moment that two hosts compare (lease expiry, fencing).

A host's clock may be off, jump, or stand still while the process is frozen; the database server
is the one clock all schedulers share, so a lease's expiry is written and judged by it alone.
Django's ``Now()`` is not enough on MySQL and MariaDB: ``CURRENT_TIMESTAMP`` is in the session's
time zone, while Django stores UTC there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db.models import DateTimeField, ExpressionWrapper, Func, Value
from django.db.models.sql.compiler import SQLCompiler


class DatabaseNow(Func):
    """The database server's current time, as Django stores datetimes on that backend."""

    template = "CURRENT_TIMESTAMP"
    output_field = DateTimeField()

    def as_postgresql(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> Any:
        # CURRENT_TIMESTAMP is the start of the transaction; the statement's own time is wanted.
        return self.as_sql(compiler, connection, template="STATEMENT_TIMESTAMP()", **extra)

    def as_mysql(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> Any:
        template = "UTC_TIMESTAMP(6)" if django_settings.USE_TZ else "CURRENT_TIMESTAMP(6)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> Any:
        modifier = "" if django_settings.USE_TZ else ", 'localtime'"
        template = f"STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', 'NOW'{modifier})"
        return self.as_sql(compiler, connection, template=template, **extra)


def database_now_plus(seconds: float) -> ExpressionWrapper:
    """The database's time ``seconds`` from now, e.g. for a lease's expiry."""
    return ExpressionWrapper(DatabaseNow() + Value(timedelta(seconds=seconds)), output_field=DateTimeField())
