"""What a run writes, kept with its row: the records it logs and what it prints, capped.

Captured where the job's code runs — a pool thread, a child of the process pool, a task worker —
by one mechanism: a handler on the root logger and stand-ins for ``sys.stdout`` and
``sys.stderr``, each writing to the buffer of the run whose context it is called in and passing
everything else through untouched. The run is found through a context variable, so runs going
on together in the scheduler's threads each keep their own output, and an ``async def`` job's
records (emitted on asgiref's event loop thread, which carries the context over) are its own.

Not captured: records that never reach the root logger (a logger with ``propagate=False``, a
level that drops them), what threads the job starts itself write (a new thread starts with an
empty context), and writes straight to the file descriptors (a subprocess, C code). The
scheduler's own records (the ``scheduling`` loggers) are left out: they are in the row already.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from scheduling.history.rows import storable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Capped:
    """Text kept up to ``limit`` characters: its first half and its last half, counting what was
    cut between them, so a run that prints without end holds bounded memory."""

    def __init__(self, limit: int) -> None:
        self.head_room = limit // 2
        self.tail_room = limit - self.head_room
        self._head: list[str] = []
        self._head_length = 0
        self._tail: deque[str] = deque()
        self._tail_length = 0
        self.cut = 0
        self._lock = threading.Lock()  # a job may log from several threads it carries a context to

    def write(self, text: str) -> None:
        with self._lock:
            room = self.head_room - self._head_length
            if room > 0:
                self._head.append(text[:room])
                self._head_length += len(self._head[-1])
                text = text[room:]
            if not text:
                return
            self._tail.append(text)
            self._tail_length += len(text)
            while self._tail_length > self.tail_room:
                excess = self._tail_length - self.tail_room
                first = self._tail[0]
                dropped = min(excess, len(first))
                if dropped == len(first):
                    self._tail.popleft()
                else:
                    self._tail[0] = first[dropped:]
                self._tail_length -= dropped
                self.cut += dropped

    def value(self) -> str:
        """The text kept, storable in any database (see scheduling.history.rows.storable)."""
        with self._lock:
            head, tail = "".join(self._head), "".join(self._tail)
            if not self.cut:
                return storable(head + tail)
            return storable(f"{head}\n[… {self.cut} characters cut …]\n{tail}")


_current: ContextVar[Capped | None] = ContextVar("scheduling_run_output", default=None)


class _RunLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        buffer = _current.get()
        if buffer is None or record.name == "scheduling" or record.name.startswith("scheduling."):
            _last_resort(record)
            return
        try:
            buffer.write(self.format(record) + "\n")
        # A record that cannot be formatted is reported the logging module's way, never raised.
        except Exception:
            self.handleError(record)


def _last_resort(record: logging.LogRecord) -> None:
    """Pass on a record no other handler takes to ``logging.lastResort`` (stderr, WARNING and
    above), as Python does when a record finds no handler: this one, on the root logger, would
    otherwise count as one and silence those records outside runs."""
    resort = logging.lastResort
    if resort is None or record.levelno < resort.level:
        return
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(handler is not _handler for handler in logger.handlers):
            return
        logger = logger.parent if logger.propagate else None
    resort.handle(record)


class _RunStream:
    """``sys.stdout`` or ``sys.stderr``: a run's writes go to its output, all others through."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer = _current.get()
        if buffer is None:
            return self.stream.write(text)
        buffer.write(text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_handler = _RunLogHandler()
_handler.setFormatter(logging.Formatter(FORMAT))
_install_lock = threading.Lock()


def _install() -> None:
    """Put the handler and the stand-ins in place (again, if something replaced them since)."""
    # Looked at first without the lock, which every job thread would otherwise take at every run.
    if _handler in logging.root.handlers and _wrapped(sys.stdout) and _wrapped(sys.stderr):
        return
    with _install_lock:
        root = logging.getLogger()
        if _handler not in root.handlers:
            root.addHandler(_handler)
        # None (no console: pythonw, some daemons) stays None: print() then writes nowhere.
        if sys.stdout is not None and not isinstance(sys.stdout, _RunStream):
            sys.stdout = _RunStream(sys.stdout)
        if sys.stderr is not None and not isinstance(sys.stderr, _RunStream):
            sys.stderr = _RunStream(sys.stderr)


def _wrapped(stream: TextIO | None) -> bool:
    return stream is None or isinstance(stream, _RunStream)


@contextmanager
def captured(limit: int) -> Iterator[Capped | None]:
    """Capture what the code run inside writes, up to ``limit`` characters (0: nothing)."""
    if limit <= 0:
        yield None
        return
    _install()
    buffer = Capped(limit)
    token = _current.set(buffer)
    try:
        yield buffer
    finally:
        _current.reset(token)
