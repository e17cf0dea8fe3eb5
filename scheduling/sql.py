"""One UPDATE that gives many rows each their own values, joined from a table of values.

Django's ``bulk_update()`` writes ``SET column = CASE pk WHEN … END``: the server compares every
row with every branch (measured on PostgreSQL: 90 ms for 500 rows of two columns, quadratic),
Django builds a ``When`` expression per row and field (≈ 0.8 ms per row of six fields) and it
wraps the statement in a transaction it does not need. The scheduler writes such updates on
every pass of its loop, so it joins the rows with a table of their new values instead — linear
at the server —, each value prepared by its field exactly as the ORM would:

* PostgreSQL: ``UPDATE t SET … FROM unnest(%b::type[], …) AS v (…) WHERE t.pk = v.pk`` (below)
* SQLite (3.33+): ``… FROM (VALUES (…), …) AS v …``, SQLite naming its columns ``column1, column2…``
* MySQL and MariaDB: ``UPDATE t JOIN (SELECT … UNION ALL SELECT …) AS v ON t.pk = v.pk SET …``

On PostgreSQL the table of values is ``unnest()`` of one array per column, for the INSERT too,
not a VALUES list: a statement with a placeholder per value (28,000 for a thousand history rows)
cost psycopg about a quarter of a second to parse on every pass (it caches only short
statements), and the server more to plan; with one placeholder per column the text is the same
every pass.
Measured on PostgreSQL 15, a thousand history rows: 260 ms with VALUES, 70 ms with arrays. And
the arrays are bound at the server (``_cursor``), not quoted into the text as Django's cursor
does: psycopg quoted each array in Python, bytes escaped twice (once in the array, once as a
literal): a first start with 10,000 jobs took a third longer.

Values are prepared as the ORM would, but without its per-value machinery where that is a
no-op: a value of the Python type the column stores (``str`` in a text column, an aware
``datetime`` on PostgreSQL…) is passed as it is; any other goes through the field's
``get_db_prep_save``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, Generic, TypeVar
from uuid import UUID

from django.db import connections, router
from django.db.models import Model
from django.db.models.base import ModelState

M = TypeVar("M", bound=Model)


def update_rows(
    model: type[Model],
    rows: Sequence[tuple[Any, dict[str, Any]]],
    fields: Sequence[str],
    where: str = "",
    where_params: Sequence[Any] = (),
    compare: Sequence[str] = (),
    expressions: Mapping[str, str] | None = None,
) -> int:
    """Set ``fields`` of each (pk, values) row in one statement; returns the rows changed.

    ``where`` (SQL on the model's table, with ``where_params``) narrows the rows further, e.g.
    "AND status = %s". ``compare`` names fields that must still hold, row by row, the values
    given under ``"<name>__was"`` in each row's values: a compare-and-set, so a row another
    writer changed since it was read is left alone (and not counted). ``expressions`` sets a
    field to SQL of its own instead of its new value, ``{value}`` standing for that value and
    ``{table}`` for the quoted table (e.g. a CASE on what the row holds as it is written);
    no parameters: constants only.
    """
    if not rows:
        return 0
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    columns: list[Any] = [meta.pk, *(meta.get_field(name) for name in [*fields, *compare])]
    keys = [meta.pk.name, *fields, *(f"{name}__was" for name in compare)]
    given = [[key for key, _ in rows]] + [[values[name] for _, values in rows] for name in keys[1:]]
    prepared = [prepare(column, values, connection) for column, values in zip(columns, given, strict=True)]
    build = {"postgresql": _postgresql, "sqlite": _sqlite}.get(connection.vendor, _mysql)
    sql = build(connection, meta.db_table, columns, len(fields), len(rows), expressions or {}) + f" {where}"
    params = _params(prepared, connection, columns)
    with _cursor(connection) as cursor:
        cursor.execute(sql, [*params, *where_params])
        return cursor.rowcount


def _cursor(connection: Any) -> Any:
    """A cursor of ``connection`` for these statements: on PostgreSQL with psycopg 3, one that
    binds the parameters at the server (Django's quotes them into the text, in Python). It
    prepares statements only as the site's ``prepare_threshold`` says (Django: never, by default,
    for poolers such as PgBouncer)."""
    if connection.vendor != "postgresql" or (binding := _server_binding()) is None:
        return connection.cursor()
    # Django's own cursor() all the same (its health check, time zone, wrappers, and whatever a
    # backend or tool hooks there, such as a tenant's search_path), made by the binding class.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    driver = connection.connection
    factory = driver.cursor_factory
    driver.cursor_factory = binding
    try:
        return connection.cursor()
    finally:
        driver.cursor_factory = factory


def _array_placeholder() -> str:
    """Arrays go in binary where they are bound at the server: dumped as text, psycopg escaped
    every element in Python (an array of 10,000 values of 1 KB: 380 ms as text, 26 ms in binary)."""
    return "%s" if _server_binding() is None else "%b"


@functools.cache
def _server_binding() -> type | None:
    """Django's cursor that binds parameters at the server; None with psycopg 2. Looked up once a
    PostgreSQL connection is in use: a site on another database need not have its driver."""
    from django.db.backends.postgresql import base

    return getattr(base, "ServerBindingCursor", None)


# By column type, the Python types whose values the ORM passes to the driver unchanged; on
# PostgreSQL also aware datetimes, UUIDs and bytes (psycopg adapts them as Django would have).
_AS_IS = {
    "CharField": (str,),
    "TextField": (str,),
    "IntegerField": (int,),
    "SmallIntegerField": (int,),
    "BigIntegerField": (int,),
    "PositiveIntegerField": (int,),
    "PositiveSmallIntegerField": (int,),
    "PositiveBigIntegerField": (int,),
    "FloatField": (float,),
    "BooleanField": (bool,),
}
# Bytes of every kind: an array's values go through the one dumper of its first value.
_AS_IS_POSTGRESQL = {
    **_AS_IS,
    "DateTimeField": (datetime,),
    "UUIDField": (UUID,),
    "BinaryField": (bytes, bytearray, memoryview),
}


# Foreign keys to these save their target's value as it is (to a text key, "" would become NULL).
_KEYS_AS_IS = {"UUIDField", "IntegerField", "BigIntegerField", "AutoField", "BigAutoField"}


def _params(prepared: list[list[Any]], connection: Any, columns: list[Any]) -> list[Any]:
    """The parameters of a statement from each column's values: one array per column on
    PostgreSQL, else row after row."""
    if connection.vendor == "postgresql":
        return prepared
    return [value for row in zip(*prepared, strict=True) for value in row]


def prepare(column: Any, values: Sequence[Any], connection: Any) -> list[Any]:
    """``values`` of ``column`` as its ``get_db_prep_save`` would give them to the driver."""
    kind = column.get_internal_type()
    if column.is_relation and column.target_field.get_internal_type() in _KEYS_AS_IS:
        kind = column.target_field.get_internal_type()  # a foreign key saves its target's value
    as_is = (_AS_IS_POSTGRESQL if connection.vendor == "postgresql" else _AS_IS).get(kind, ())
    prep = column.get_db_prep_save
    if as_is == (str,):
        # Any str, such as a member of a text choices enum: CharField.to_python keeps it as it is.
        return [
            value if value is None or isinstance(value, str) else prep(value, connection) for value in values
        ]
    return [
        value
        if value is None
        or (type(value) in as_is and (type(value) is not datetime or value.tzinfo is not None))
        else prep(value, connection)
        for value in values
    ]


# The builders put only quoted names of the model and placeholders in the text (hence the noqa
# for S608): every value is a parameter. Columns are the pk, the ``assigned`` fields to set, then
# the fields to compare.


def _clauses(
    connection: Any,
    table: str,
    columns: list[Any],
    assigned: int,
    value: str,
    expressions: Mapping[str, str],
    qualify: bool = False,
) -> tuple[str, str]:
    """The SET list and the compare-and-set conditions; ``value`` names a column of the values
    table from its position, counted from 0 (e.g. "v.c{0}", or "v.column{1}" counting from 1),
    ``expressions`` are update_rows', and ``qualify`` prefixes the assigned columns with their
    table."""
    quote = connection.ops.quote_name
    target = f"{quote(table)}." if qualify else ""

    def new(number: int, column: Any) -> str:
        given = value.format(number, number + 1)
        if column.name not in expressions:
            return given
        return expressions[column.name].format(value=given, table=quote(table))

    assignments = ", ".join(
        f"{target}{quote(column.column)} = {new(number, column)}"
        for number, column in enumerate(columns)
        if 0 < number <= assigned
    )
    compared = "".join(
        f" AND {quote(table)}.{quote(column.column)} = {value.format(number, number + 1)}"
        for number, column in enumerate(columns)
        if number > assigned
    )
    return assignments, compared


def _postgresql(
    connection: Any, table: str, columns: list[Any], assigned: int, count: int, expressions: Mapping[str, str]
) -> str:
    quote = connection.ops.quote_name
    aliases = ", ".join(f"c{number}" for number in range(len(columns)))
    assignments, compared = _clauses(connection, table, columns, assigned, "v.c{0}", expressions)
    return (
        f"UPDATE {quote(table)} SET {assignments} FROM {_table(connection, columns)} AS v ({aliases}) "  # noqa: S608
        f"WHERE {quote(table)}.{quote(columns[0].column)} = v.c0{compared}"
    )


def _table(connection: Any, columns: list[Any]) -> str:
    """A PostgreSQL table of rows of values, an array per column typed as the column."""
    array = _array_placeholder()
    return "unnest(" + ", ".join(f"{array}::{column.db_type(connection)}[]" for column in columns) + ")"


def _sqlite(
    connection: Any, table: str, columns: list[Any], assigned: int, count: int, expressions: Mapping[str, str]
) -> str:
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # SQLite names the columns of VALUES column1, column2…
    assignments, compared = _clauses(connection, table, columns, assigned, "v.column{1}", expressions)
    return (
        f"UPDATE {quote(table)} SET {assignments} FROM (VALUES {', '.join([row] * count)}) AS v "  # noqa: S608
        f"WHERE {quote(table)}.{quote(columns[0].column)} = v.column1{compared}"
    )


def _mysql(
    connection: Any, table: str, columns: list[Any], assigned: int, count: int, expressions: Mapping[str, str]
) -> str:
    quote = connection.ops.quote_name
    # Without the cast, bytes in a derived table become text in the connection's character set.
    values = [
        "CAST(%s AS BINARY)" if column.get_internal_type() == "BinaryField" else "%s" for column in columns
    ]
    first = "SELECT " + ", ".join(f"{value} AS c{number}" for number, value in enumerate(values))
    others = ["SELECT " + ", ".join(values)] * (count - 1)
    assignments, compared = _clauses(
        connection, table, columns, assigned, "v.c{0}", expressions, qualify=True
    )
    return (
        f"UPDATE {quote(table)} JOIN ({' UNION ALL '.join([first, *others])}) AS v "  # noqa: S608
        f"ON {quote(table)}.{quote(columns[0].column)} = v.c0{compared} SET {assignments} WHERE 1 = 1"
    )


def insert_rows(
    objs: Sequence[Model],
    condition: tuple[str, Sequence[Any]] = ("1 = 1", ()),
    returning: Sequence[str] = (),
    conflicts: str | Sequence[str] = "skip",
) -> tuple[int, list[tuple[Any, ...]]]:
    """Insert ``objs`` in one statement, only if ``condition`` (SQL, params) holds; returns (rows
    inserted, their ``returning`` columns).

    ``conflicts`` says what a row that breaks a unique constraint does: "skip" (left out),
    "raise" (IntegrityError, nothing inserted), or, given field names, update those fields of
    the row with the same primary key (an upsert).

    The condition is evaluated in the statement itself (``INSERT … SELECT … WHERE cond``), so no
    other writer can come between the check and the write (see scheduling.fencing). Returned
    columns are raw database values (e.g. text datetimes on SQLite), empty where the backend
    cannot return rows from an INSERT (MySQL, SQLite < 3.35).
    """
    if not objs:
        return 0, []
    model = type(objs[0])
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    columns: list[Any] = [field for field in meta.concrete_fields if field is not meta.auto_field]
    prepared = [_prepared(column, objs, connection) for column in columns]
    quote = connection.ops.quote_name
    table, names = quote(meta.db_table), ", ".join(quote(column.column) for column in columns)
    if connection.vendor == "postgresql":
        select, params = _select_arrays(connection, columns, prepared)
    elif connection.vendor == "mysql":
        select, params = _select_union(columns, len(objs)), _params(prepared, connection, columns)
    else:
        select, params = (
            _select_values(columns, len(objs)),
            _params(prepared, connection, columns),
        )
    ignore = " IGNORE" if conflicts == "skip" and connection.vendor == "mysql" else ""
    # SQLite's grammar needs the WHERE before an upsert clause after a SELECT: it is always there.
    on_conflict = _on_conflict(connection, meta, conflicts)
    sql = f"INSERT{ignore} INTO {table} ({names}) {select} WHERE {condition[0]}{on_conflict}"
    returns = connection.features.can_return_rows_from_bulk_insert and returning
    if returns:
        sql += " RETURNING " + ", ".join(quote(meta.get_field(name).column) for name in returning)  # type: ignore[union-attr,arg-type]
    with _cursor(connection) as cursor:
        cursor.execute(sql, [*params, *condition[1]])
        rows = list(cursor.fetchall()) if returns else []
        return (len(rows) if returns else cursor.rowcount), rows


def insert_all(objs: Sequence[Model], conflicts: str | Sequence[str] = "raise") -> None:
    """Insert any number of ``objs``, as many a statement as the database takes (see insert_rows)."""
    if not objs:
        return
    connection = connections[router.db_for_write(type(objs[0]))]
    size = max(connection.ops.bulk_batch_size(type(objs[0])._meta.concrete_fields, objs), 1)
    for start in range(0, len(objs), size):
        insert_rows(objs[start : start + size], conflicts=conflicts)


def _on_conflict(connection: Any, meta: Any, conflicts: str | Sequence[str]) -> str:
    if conflicts == "raise" or (conflicts == "skip" and connection.vendor == "mysql"):
        return ""
    if conflicts == "skip":
        return " ON CONFLICT DO NOTHING"
    quote = connection.ops.quote_name
    columns = [quote(meta.get_field(name).column) for name in conflicts]
    if connection.vendor == "mysql":
        return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{column} = VALUES({column})" for column in columns)
    return f" ON CONFLICT ({quote(meta.pk.column)}) DO UPDATE SET " + ", ".join(
        f"{column} = EXCLUDED.{column}" for column in columns
    )


def _prepared(column: Any, objs: Sequence[Model], connection: Any) -> list[Any]:
    """What the ORM would save for ``column`` of each new object, prepared (``pre_save`` only
    where it does more than read the attribute: auto_now and auto_now_add). Such a column gets
    one moment for all the rows, prepared once: the statement writes them together (a first start
    with 100,000 jobs took the clock, and turned it into text on SQLite, 200,000 times)."""
    if getattr(column, "auto_now", False) or getattr(column, "auto_now_add", False):
        now = column.pre_save(objs[0], add=True)
        for obj in objs[1:]:
            setattr(obj, column.attname, now)
        return prepare(column, [now], connection) * len(objs)
    return prepare(column, list(map(attrgetter(column.attname), objs)), connection)


def _select_arrays(connection: Any, columns: list[Any], prepared: list[list[Any]]) -> tuple[str, list[Any]]:
    """PostgreSQL: the rows as one array per column, but a column with the same value in every
    row (most of a pass's: its status, host, process, pass, attempt…) as that one value: the
    driver dumps a few thousand values in Python rather than 28,000."""
    selected: list[str] = []
    arrays: list[str] = []
    scalars: list[Any] = []
    columns_given: list[list[Any]] = []
    for number, (column, values) in enumerate(zip(columns, prepared, strict=True)):
        db_type = column.db_type(connection)
        # The first column stays an array, so that the rows are as many as the values.
        if number and values.count(values[0]) == len(values):
            selected.append(f"%s::{db_type}")
            scalars.append(values[0])
        else:
            selected.append(f"v.c{len(arrays)}")
            arrays.append(f"{_array_placeholder()}::{db_type}[]")
            columns_given.append(values)
    aliases = ", ".join(f"c{number}" for number in range(len(arrays)))
    select = f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS v ({aliases})"  # noqa: S608
    return select, [*scalars, *columns_given]


def _select_values(columns: list[Any], count: int) -> str:
    """SQLite: a placeholder per value."""
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"SELECT * FROM (VALUES {', '.join([row] * count)})"  # noqa: S608


def _select_union(columns: list[Any], count: int) -> str:
    """MySQL and MariaDB, which have no VALUES table: a SELECT per row."""
    # Without the cast, bytes in a derived table become text in the connection's character set.
    values = [
        "CAST(%s AS BINARY)" if column.get_internal_type() == "BinaryField" else "%s" for column in columns
    ]
    first = "SELECT " + ", ".join(f"{value} AS c{number}" for number, value in enumerate(values))
    others = ["SELECT " + ", ".join(values)] * (count - 1)
    return f"SELECT * FROM ({' UNION ALL '.join([first, *others])}) AS v"  # noqa: S608


class NewRows(Generic[M]):
    """Builds new, unsaved rows of a model, each as ``model(**values)`` would, from a blank row
    copied, not by ``Model.__init__``, which walks every field for each row (17 µs against 2.5 µs
    a row of ``ScheduledJob``: 100,000 of them on a first start, and a job store row for every run).

    ``values`` name plain fields by attribute (``calendar_id``, not ``calendar``). A field left
    out takes the blank row's value: its default, copied if it is a mutable one.
    """

    def __init__(self, model: type[M]) -> None:
        self._model = model

    @functools.cached_property
    def _blank(self) -> dict[str, Any]:
        # Made at first use, not at import: a model cannot be instantiated before the apps are ready.
        return {name: value for name, value in vars(self._model()).items() if name != "_state"}

    @functools.cached_property
    def _mutable(self) -> list[str]:
        return [name for name, value in self._blank.items() if isinstance(value, (dict, list, set))]

    def __call__(self, **values: Any) -> M:
        if unknown := values.keys() - self._blank.keys():
            raise TypeError(f"{self._model.__name__} has no field {sorted(unknown)[0]!r}")
        row = self._model.__new__(self._model)
        fields = vars(row)
        fields.update(self._blank)
        fields.update(values)
        for name in self._mutable:
            if name not in values:
                fields[name] = copy.copy(self._blank[name])
        row._state = ModelState()  # adding, no database yet: as a new row has
        return row
