"""Who a process is, in terms that still mean something to another process: proof of death.

A scheduler that died on this machine need not be waited for: its lease can be taken and its runs
recorded interrupted at once. But "same hostname and ``os.kill(pid, 0)`` fails" proves nothing:
containers with host networking (or the same hostname) each have their own PID namespace, where
the other's pid is absent or belongs to someone else, and a pid is reused once its process is gone.

So a process is named by three facts of Linux: the boot id (one kernel, one boot), its PID
namespace (an inode number, unique within a boot), and its start time in clock ticks since boot
(field 22 of ``/proc/<pid>/stat``, fixed for a process's life). Another process is *proven dead*
only when boot id and namespace are ours (its pid means the same thing here) and the pid is gone,
is a zombie, or now belongs to a process that started at another time. Anything else — another
namespace or boot, a row written by older code without these facts, a system without ``/proc`` —
proves nothing, and the caller waits for the lease or the heartbeat to expire.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduling.models import SchedulerInstance

PROC = Path("/proc")


@dataclass(frozen=True)
class Identity:
    boot_id: str
    pid_namespace: str
    start_time: int


def current() -> Identity | None:
    """This process's identity; None where it cannot be read (no Linux ``/proc``)."""
    # Keyed by pid: a forked child (embedded mode under a pre-forking server) is another process.
    return _identity(os.getpid())


@functools.cache
def _identity(pid: int) -> Identity | None:
    try:
        boot_id = (PROC / "sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.readlink(PROC / "self/ns/pid")
    except OSError:
        return None
    info = _stat(pid)
    # /proc shows the pids of the namespace it was mounted in: a process in a PID namespace of its
    # own without its own /proc (``unshare --pid`` without ``--mount-proc``) would read another
    # process's file under its own pid, and must not name itself by it.
    if info is None or _stat_pid(PROC / "self/stat") != pid:
        return None
    return Identity(boot_id, pid_namespace, info[1])


def fields() -> dict[str, str | int | None]:
    """This process's identity as the fields of its SchedulerInstance row."""
    me = current()
    if me is None:
        return {"boot_id": "", "pid_namespace": "", "process_started": None}
    return {"boot_id": me.boot_id, "pid_namespace": me.pid_namespace, "process_started": me.start_time}


def scheduler_dead(instance: SchedulerInstance) -> bool:
    """Whether the scheduler process of this row is certainly gone (see ``proven_dead``)."""
    return proven_dead(instance.pid, instance.boot_id, instance.pid_namespace, instance.process_started)


def proven_alive(instance: SchedulerInstance) -> bool:
    """Whether the row's process is certainly still running here (frozen, perhaps, but alive).

    Only a process of this kernel and PID namespace can be seen; for any other, only its
    heartbeat tells.
    """
    me = current()
    if me is None or not instance.boot_id or not instance.pid_namespace or instance.process_started is None:
        return False
    if (instance.boot_id, instance.pid_namespace) != (me.boot_id, me.pid_namespace):
        return False
    return not scheduler_dead(instance)


def proven_dead(pid: int, boot_id: str, pid_namespace: str, start_time: int | None) -> bool:
    """Whether the process ``pid`` described by these facts is certainly not running any more.

    Empty facts (a row written by older code, or on a system without ``/proc``) prove nothing.
    """
    me = current()
    if me is None or not boot_id or not pid_namespace or start_time is None:
        return False
    if (boot_id, pid_namespace) != (me.boot_id, me.pid_namespace):
        return False
    try:
        # The authority on whether a pid exists here, even where /proc hides other users' processes.
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    info = _stat(pid)
    if info is None:
        return False  # it exists, but its start time cannot be read
    state, started = info
    # A zombie has exited and runs no code; only its exit status waits to be collected.
    return state in ("Z", "X") or started != start_time


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process of this namespace; None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2, the command name, is in parentheses and may itself hold spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _stat_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split(" ", 1)[0])
    except OSError:
        return None
