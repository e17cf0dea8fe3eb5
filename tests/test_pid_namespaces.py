"""Two schedulers on one host in different PID namespaces (containers with host networking, or the
same hostname): neither takes the other's lease or interrupts its runs while both live, and a
scheduler that dies is still replaced at once by a standby that can prove it dead."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from scheduling.conf import settings
from scheduling.models import Execution, Lease, SchedulerInstance
from tests.conftest import wait_for

pytestmark = pytest.mark.processes


def unshare_works() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


def in_another_pid_namespace() -> tuple[str, ...]:
    """A command prefix that runs the scheduler in a PID namespace of its own (and its own /proc),
    at a pid that no process of ours has, so that from here it looks like a pid that is gone, and
    from there ours do. ``--kill-child``: the namespace dies with the ``unshare`` process."""
    here = {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    pid = next(candidate for candidate in range(30000, 300, -1) if candidate not in here)
    return (
        "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
        "sh", "-c", f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "$@"; exit $?', "sh",
    )  # fmt: skip


def beats(instance: SchedulerInstance, count: int) -> bool:
    """Whether the scheduler beat ``count`` times since it started (each beat also runs recovery)."""
    last_beat = SchedulerInstance.objects.get(pk=instance.pk).last_beat
    return last_beat - instance.started_at >= timedelta(seconds=count * settings.HEARTBEAT_INTERVAL)


@pytest.mark.skipif(not unshare_works(), reason="needs `unshare --pid --fork --mount-proc` (root on Linux)")
def test_schedulers_in_two_pid_namespaces_leave_each_other_alone_and_a_dead_one_is_replaced_at_once(
    scheduler_process, figures
) -> None:
    env = {"TEST_SLOW_SECONDS": "60"}
    active = scheduler_process("tests.support.process_jobs", env=env)
    execution = wait_for(lambda: Execution.objects.filter(job_id="proc.slow", status="running").first(), 15)
    assert execution.pid == active.popen.pid
    elsewhere = scheduler_process("tests.support.process_jobs", env=env, wrapper=in_another_pid_namespace())
    local = scheduler_process("tests.support.process_jobs", env=env)
    holder = SchedulerInstance.objects.get(pid=active.popen.pid, stopped_at__isnull=True)
    other = SchedulerInstance.objects.exclude(pid__in=[active.popen.pid, local.popen.pid]).get()
    assert other.pid_namespace not in ("", holder.pid_namespace)
    assert other.hostname == holder.hostname
    with pytest.raises(ProcessLookupError):
        os.kill(other.pid, 0)  # as today's code saw it: "gone"

    def undisturbed_until(done: bool) -> bool:
        assert Lease.objects.get().holder == holder.pk, "the live holder kept its lease"
        assert Execution.objects.get(pk=execution.pk).status == Execution.Status.RUNNING
        assert not Execution.objects.filter(status="interrupted").exists()
        return done

    # Each standby tries to claim the lease every second and recovers runs at each beat.
    wait_for(
        lambda: undisturbed_until(
            beats(other, 4) and beats(SchedulerInstance.objects.get(pid=local.popen.pid), 4)
        ),
        30,
    )
    assert SchedulerInstance.objects.get(pk=other.pk).role == SchedulerInstance.Role.STANDBY

    last_beat = SchedulerInstance.objects.get(pk=holder.pk).last_beat
    active.signal(signal.SIGKILL)
    active.wait()  # reaped, as a supervisor would
    interrupted = wait_for(
        lambda: Execution.objects.filter(pk=execution.pk, status=Execution.Status.INTERRUPTED).first(), 15
    )
    new_holder = wait_for(
        lambda: SchedulerInstance.objects.filter(role="active").exclude(pk=holder.pk).first(), 15
    )
    assert new_holder.pid == local.popen.pid, "the standby that can prove the death took over"
    # Before the dead one's heartbeat timed out: by proof of death, not by waiting.
    assert interrupted.finished_at < last_beat + timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
    assert elsewhere.popen.poll() is None
    figures(
        f"{connection.vendor}: schedulers in two PID namespaces of one host: the live holder kept its "
        f"lease and its run; SIGKILLed, it was replaced by the standby of its namespace, its run marked "
        f"interrupted {(interrupted.finished_at - last_beat).total_seconds():.1f} s after its last beat"
    )
