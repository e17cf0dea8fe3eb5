"""The hand-written INSERT and UPDATE of many rows (scheduling.sql): what goes in is what the ORM
would have written, on every database, whatever the text holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import sql
from scheduling.models import Execution, ScheduledJob, SchedulerInstance

pytestmark = pytest.mark.django_db(transaction=True)

# Text a driver or an array literal could get wrong: quotes, braces, commas, backslashes, the
# word NULL, an empty string, a NUL-free control character, and characters beyond ASCII.
AWKWARD_TEXT = ['"quoted", {braced}', "back\\slash\\", "NULL", "", "tab\there", "日本語 ✓", "it's"]
SAMPLES: dict[type, list[Any]] = {
    str: [*AWKWARD_TEXT, Execution.Status.RUNNING],
    int: [0, -1, 2**31 - 1],
    float: [0.0, -1.5, 1e-9],
    bool: [True, False],
    datetime: [datetime(2026, 12, 6, 13, 0, 0, 123456, tzinfo=UTC)],
    uuid.UUID: [uuid.UUID(int=7)],
    bytes: [b"\x00\x01{},\\'\"", b""],
}


def test_values_passed_as_they_are_are_exactly_what_the_orm_would_pass() -> None:
    # The invariant that lets scheduling.sql.prepare skip the ORM: for every column of every model,
    # a value it passes unchanged is one the field's get_db_prep_save returns unchanged.
    checked = 0
    for model in [*apps.get_app_config("scheduling").get_models(), DjangoJob]:
        for column in model._meta.concrete_fields:
            for value in [value for values in SAMPLES.values() for value in values]:
                try:
                    [given] = sql.prepare(column, [value], connection)
                except (ValidationError, ValueError, TypeError):
                    continue  # not a value of this column's type: the ORM said so
                if given is value:
                    orm = column.get_db_prep_save(value, connection)
                    # psycopg's Binary only marks bytes as bytea, which bytes are to it anyway.
                    assert getattr(orm, "obj", orm) == value, (model, column.name, value)
                    checked += 1
    assert checked > 100


@pytest.mark.parametrize("text", AWKWARD_TEXT)
def test_awkward_text_and_json_go_in_and_come_back_unchanged(text: str) -> None:
    instance = SchedulerInstance.objects.create(hostname="here", pid=1)
    when = datetime(2026, 12, 6, 13, 0, 0, 123456, tzinfo=UTC)
    rows = [
        Execution(
            job_id=f"job {number}",
            status="running",
            scheduled_at=when + timedelta(seconds=number),
            started_at=when,
            exception=text,
            args=[text, None, {"k": [text, 1.5, True]}],
            kwargs={text: text} if number else None,
            instance=instance,
            pass_id=2**62,
            duration=0.25,
        )
        for number in range(3)
    ]

    inserted, _ = sql.insert_rows(rows)
    assert inserted == 3
    stored = {row.job_id: row for row in Execution.objects.all()}
    for row in rows:
        got = stored[row.job_id]
        assert (got.exception, got.args, got.kwargs, got.scheduled_at) == (
            text,
            row.args,
            row.kwargs,
            row.scheduled_at,
        )
        assert (got.instance_id, got.pass_id, got.duration) == (instance.pk, 2**62, 0.25)

    changed = sql.update_rows(
        Execution,
        [(got.pk, {"output": text + "!", "finished_at": when}) for got in stored.values()],
        ["output", "finished_at"],
    )
    assert changed == 3
    assert set(Execution.objects.values_list("output", "finished_at")) == {(text + "!", when)}


def test_bytes_are_compared_and_set_byte_for_byte() -> None:
    state = b'\x00\x80{"a", b}\\\xff'
    when = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    DjangoJob.objects.create(id="binary", next_run_time=when, job_state=state)

    def move(was: bytes) -> int:
        return sql.update_rows(
            DjangoJob,
            [("binary", {"job_state": state + b"\x00", "next_run_time": None, "job_state__was": was})],
            ["job_state", "next_run_time"],
            compare=["job_state"],
        )

    assert move(state[:-1]) == 0, "a different state is not the one read"
    assert move(state) == 1
    stored = DjangoJob.objects.get(id="binary")
    assert (bytes(stored.job_state), stored.next_run_time) == (state + b"\x00", None)


def test_bytes_of_every_kind_go_together_in_one_statement() -> None:
    # On PostgreSQL a column's values go as one array, dumped by the dumper of its first value.
    sql.insert_all([DjangoJob(id="a", job_state=bytearray(b"\x01")), DjangoJob(id="b", job_state=b"\x02")])

    changed = sql.update_rows(
        DjangoJob,
        [("a", {"job_state": memoryview(b"\x03")}), ("b", {"job_state": b"\x04"})],
        ["job_state"],
    )

    assert changed == 2
    assert {id: bytes(state) for id, state in DjangoJob.objects.values_list("id", "job_state")} == {
        "a": b"\x03",
        "b": b"\x04",
    }


def test_an_insert_skips_raises_or_updates_a_row_whose_key_is_taken_as_asked() -> None:
    when = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    first = ScheduledJob(id="same", source="code", name="first", run_policy={"retries": 1})
    again = ScheduledJob(id="same", source="external", name="again", run_policy={"retries": 2})
    sql.insert_all([first])

    sql.insert_all([again], conflicts="skip")
    assert ScheduledJob.objects.values_list("source", "name").get() == ("code", "first")
    with pytest.raises(IntegrityError), transaction.atomic():
        sql.insert_all([again])
    sql.insert_all([again], conflicts=["name", "run_policy"])
    stored = ScheduledJob.objects.get()
    assert (stored.source, stored.name, stored.run_policy) == ("code", "again", {"retries": 2})

    # Bytes on every database (the job store's rows), a key of text inserted with the row.
    sql.insert_all([DjangoJob(id="job", next_run_time=when, job_state=b"\x00\xff")], conflicts="raise")
    assert bytes(DjangoJob.objects.get(id="job").job_state) == b"\x00\xff"


def test_new_rows_are_what_the_model_builds_and_save_as_such() -> None:
    values = {
        "id": "report",
        "source": ScheduledJob.Source.CODE,
        "func_ref": "tests.support.jobs:succeed",
        "declaration": {"schedule": {"interval": {"minutes": 5}}},
        "declared_fingerprint": "f" * 64,
        "state_digest": "d" * 32,
    }
    made = sql.NewRows(ScheduledJob)(**values)
    built = ScheduledJob(**values)

    assert {k: v for k, v in vars(made).items() if k != "_state"} == {
        k: v for k, v in vars(built).items() if k != "_state"
    }
    assert (made._state.adding, made._state.db) == (True, None)
    sql.insert_all([made])
    assert ScheduledJob.objects.get(id="report").declaration == values["declaration"]
    store_row = sql.NewRows(DjangoJob)(id="a", next_run_time=None, job_state=b"state")
    store_row.save()
    assert bytes(DjangoJob.objects.get(id="a").job_state) == b"state"


def test_new_rows_do_not_share_a_mutable_default_and_refuse_an_unknown_field() -> None:
    new = sql.NewRows(ScheduledJob)
    first, second = new(id="a"), new(id="b")
    first.run_policy["retries"] = 3

    assert second.run_policy == {}
    with pytest.raises(TypeError, match="ScheduledJob has no field 'nmae'"):
        new(id="c", nmae="typo")


def test_rows_inserted_by_one_statement_take_one_moment_for_each_auto_now_column() -> None:
    rows = [ScheduledJob(id=f"job-{number}", source=ScheduledJob.Source.CODE) for number in range(20)]
    before = timezone.now()

    sql.insert_rows(rows)

    moments = set(ScheduledJob.objects.values_list("created_at", "updated_at"))
    assert len(moments) == 1
    [(created, updated)] = moments
    assert before <= created <= updated <= timezone.now()
    assert {(row.created_at, row.updated_at) for row in rows} == moments  # as pre_save sets them


def test_on_postgresql_the_values_are_bound_at_the_server() -> None:
    """psycopg quoted each array into the text in Python, bytes escaped twice."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's binding")
    import psycopg

    with sql._cursor(connection) as cursor:
        assert not isinstance(cursor.cursor, psycopg.ClientCursor)
    sql.insert_all([DjangoJob(id="job", next_run_time=None, job_state=b"\x00\xff")])
    sql.update_rows(DjangoJob, [("job", {"job_state": b"\xff\x00"})], ["job_state"])

    assert bytes(DjangoJob.objects.get().job_state) == b"\xff\x00"
