"""After a take-over: the heap its sync left behind given back, and what lives on set aside.

Taking over loads and writes every stored job once (100,000 jobs: hundreds of megabytes of
pickled states, jobs and rows), then frees it. CPython hands objects larger than 512 bytes —
a pickled job's state among them — to the C library's malloc, which keeps freed memory for
later use instead of returning it: the scheduler then idles at the size of its busiest moment.
glibc's ``malloc_trim`` returns what is free (restart with 10,000 jobs on PostgreSQL, ``make bench``:
98 → 82 MB resident).
Elsewhere (musl, macOS) there is nothing to call, and nothing is done.

In a process of its own (``runscheduler``), what is alive once the scheduler has taken over —
Django, the site's modules, the declarations — lives as long as the process: it is moved out of
the garbage collector's sight (``gc.freeze()``), so a full collection no longer walks it. With
1,000 jobs a second on PostgreSQL, such collections took 50 to 115 ms every second or two, and one
falling at the instant the runs start made every run of that second late by as much (lateness
p99 117 to 195 ms without, 71 to 97 ms with; ``bench``). Not in a web process (``SCHEDULING_EMBEDDED``),
whose objects are the site's business. The first freeze collects nothing first (a full
collection takes 54 ms with 10,000 jobs, 152 ms with 100,000, added to the start-up): what it
sets aside that is already garbage in a cycle is kept, once. At a later take-over, what the last
one froze is collected first, so step-downs and take-overs do not pile up garbage unseen.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from functools import cache


def settle(freeze: bool) -> None:
    """After the sync that takes over: with ``freeze`` (a process of its own), set aside from the
    garbage collector what is alive now; then give the free heap back to the system."""
    if freeze:
        if gc.get_freeze_count():  # an earlier take-over's: what has died since is collected first
            gc.unfreeze()
            gc.collect()
        gc.freeze()
    give_back()


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
