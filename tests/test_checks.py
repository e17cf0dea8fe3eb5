from __future__ import annotations

import inspect

import pytest
from django.core import checks
from django.core.management import call_command

from scheduling import checks as scheduling_checks

MEMORY = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFERRED = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3", "OPTIONS": {}}}
SERVER = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "test"}}


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages]


def test_check_ids_are_unique_and_namespaced() -> None:
    source = inspect.getsource(scheduling_checks)
    found = [line.split('"')[1] for line in source.splitlines() if 'id="scheduling.' in line]
    assert len(found) == len(set(found)) == 3


def test_embedded_mode_is_refused_on_an_in_memory_database() -> None:
    assert ids(scheduling_checks.embedded_database_messages(MEMORY, embedded=True)) == ["scheduling.E001"]
    assert scheduling_checks.embedded_database_messages(MEMORY, embedded=False) == []
    assert scheduling_checks.embedded_database_messages(SERVER, embedded=True) == []


def test_time_zone_support_is_required() -> None:
    assert ids(scheduling_checks.time_zone_messages(use_tz=False)) == ["scheduling.W001"]


def test_sqlite_without_immediate_transactions_is_warned_about() -> None:
    assert ids(scheduling_checks.sqlite_locking_messages(DEFERRED)) == ["scheduling.W002"]
    assert scheduling_checks.sqlite_locking_messages(SERVER) == []


@pytest.mark.django_db  # Django 6.1's model checks read the database
def test_the_demo_settings_pass_every_check() -> None:
    call_command("check", "--fail-level", "WARNING")
