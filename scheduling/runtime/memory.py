"""Giving the heap a large step left behind back to the operating system.

Taking over loads and writes every stored job once (100,000 jobs: hundreds of megabytes of
pickled states, jobs and rows), then frees it. CPython hands objects larger than 512 bytes —
a pickled job's state among them — to the C library's malloc, which keeps freed memory for
later use instead of returning it: the scheduler then idles at the size of its busiest moment.
glibc's ``malloc_trim`` returns what is free (restart with 10,000 jobs on PostgreSQL, ``make bench``:
98 → 82 MB resident).
Elsewhere (musl, macOS) there is nothing to call, and nothing is done.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


def give_back() -> None:
    """Return the heap's free memory to the operating system, where the C library can."""
    if (trim := _malloc_trim()) is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    # The symbols the process has loaded already, libc among them: no search of the library path
    # (``ctypes.util.find_library`` would run ``ldconfig`` in a subprocess).
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
