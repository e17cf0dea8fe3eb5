"""Measuring inside the scheduler process: SQL statements by kind, CPU time, memory.

Statements are counted with an execute wrapper installed on every connection any thread opens
(``connection_created``), so the scheduler's own threads are counted, not just the main one.
Transactions do not go through cursors (Django begins them by switching autocommit off, and
SQLite's ``BEGIN IMMEDIATE`` goes to the raw connection), so COMMIT and ROLLBACK are counted by
wrapping the backend's methods; each stands for one BEGIN as well. The change listener's own
connection (PostgreSQL) is not Django's: its statements (LISTEN, the probes) are counted by
wrapping psycopg's ``Connection.execute``, which Django's cursors do not go through.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

_KIND = re.compile(r"\s*(\w+)")
_WRITTEN = re.compile(r"\s*(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+[`\"]?(\w+)", re.IGNORECASE)
_READ = re.compile(r"\bFROM\s+[`\"]?(\w+)", re.IGNORECASE)
LEASE_TABLE = "scheduling_lease"


def kind_of(sql: str) -> str:
    match = _KIND.match(sql)
    kind = match.group(1).upper() if match else "?"
    if kind == "SELECT" and "FOR UPDATE" in sql.upper():
        return "SELECT FOR UPDATE"
    return kind


def target_of(sql: str) -> str:
    """Kind and table of a statement, e.g. ``UPDATE scheduling_lease``; a write whose condition
    names the lease table (the fence, scheduling.fencing) is marked ``(fenced)``."""
    kind = kind_of(sql)
    match = _WRITTEN.match(sql) or (_READ.search(sql) if kind.startswith("SELECT") else None)
    if match is None:
        return kind
    table = match.group(1)
    fenced = kind in {"INSERT", "UPDATE", "DELETE"} and table != LEASE_TABLE and LEASE_TABLE in sql
    return f"{kind} {table}" + (" (fenced)" if fenced else "")


class PassCounter:
    """Dispatch passes of our scheduler (``Dispatcher.dispatch`` calls): the unit of 'per pass'."""

    def __init__(self) -> None:
        self.passes = 0

    def install(self) -> None:
        from scheduling.runtime.dispatch import Dispatcher

        original = Dispatcher.dispatch
        counter = self

        def dispatch(dispatcher: Dispatcher, *args: Any, **kwargs: Any) -> Any:
            counter.passes += 1
            return original(dispatcher, *args, **kwargs)

        Dispatcher.dispatch = dispatch  # type: ignore[method-assign,assignment]


class SqlCounter:
    """Counts statements by kind, and 'database is locked' errors, across all threads."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.targets: collections.Counter[str] = collections.Counter()  # by kind and table
        self.locked_errors = 0
        self._lock = threading.Lock()
        # Threads whose statements are not the scheduler's (the benchmark's own polling).
        self.ignored: set[int] = set()

    def install(self) -> None:
        connection_created.connect(self._on_connection, weak=False)
        for name in ("commit", "rollback"):
            self._wrap_transaction_end(name)
        self._wrap_raw_psycopg()

    def _wrap_raw_psycopg(self) -> None:
        try:
            from psycopg import Connection
        except ImportError:
            return
        original = Connection.execute
        counter = self

        def execute(connection: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            counter._add(query if isinstance(query, str) else query.as_string(connection))
            return original(connection, query, *args, **kwargs)

        Connection.execute = execute  # type: ignore[method-assign,assignment]

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    def snapshot_targets(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.targets)

    def _add(self, sql: str) -> None:
        if threading.get_ident() in self.ignored:
            return
        kind, target = kind_of(sql), target_of(sql)
        with self._lock:
            self.counts[kind] += 1
            self.targets[target] += 1

    def _on_connection(self, sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
        # The wrapper object outlives reconnections (close_old_connections): install it once.
        if self._wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(self._wrapper)

    def _wrapper(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self._add(sql)
        try:
            return execute(sql, params, many, context)
        except Exception as exc:
            if "database is locked" in str(exc):
                self.locked_errors += 1
            raise

    def _wrap_transaction_end(self, name: str) -> None:
        original = getattr(BaseDatabaseWrapper, name)
        counter = self

        def wrapped(connection: BaseDatabaseWrapper) -> None:
            if connection.connection is not None and not connection.get_autocommit():
                counter._add(name.upper())  # a statement of one word: its kind
            original(connection)

        setattr(BaseDatabaseWrapper, name, wrapped)


TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"}


def total(counts: collections.Counter[str]) -> int:
    """Statements that read or write data: no transaction control (listed apart, by kind)."""
    return sum(n for kind, n in counts.items() if kind not in TRANSACTION_CONTROL)


def with_begins(counts: collections.Counter[str]) -> collections.Counter[str]:
    """Add the BEGINs that do not go through a cursor (all but SQLite's): one per COMMIT/ROLLBACK."""
    counts = collections.Counter(counts)
    if "BEGIN" not in counts:
        ends = counts["COMMIT"] + counts["ROLLBACK"]
        if ends:
            counts["BEGIN"] = ends
    return +counts


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def memory_mb() -> dict[str, float]:
    """Resident memory now and at its peak, from /proc (Linux)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                values[key] = int(rest.split()[0]) / 1024
    return values


def sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.time(), 0))
