"""Proof of death across containers: a scheduler is dead only if its boot id and PID namespace are
ours and its pid is gone or now names a process that started at another time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from scheduling import identity
from scheduling.history.housekeeping import recover_interrupted
from scheduling.models import Execution, Lease, SchedulerInstance
from scheduling.runtime.leadership import Leadership, dead_local_schedulers
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the proof reads Linux's /proc")

GONE_PID = 2**22 + 7  # above any pid_max: never a live process


def me() -> identity.Identity:
    current = identity.current()
    assert current is not None
    return current


def exited_process() -> int:
    """The pid of a process that ran and was reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_this_process_is_named_by_boot_id_pid_namespace_and_start_time() -> None:
    current = me()
    assert current.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert current.pid_namespace == os.readlink("/proc/self/ns/pid")
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert current.start_time == int(stat[stat.rindex(")") + 2 :].split()[19])


def test_a_live_process_of_this_namespace_is_not_dead() -> None:
    assert not identity.proven_dead(os.getpid(), me().boot_id, me().pid_namespace, me().start_time)


def test_a_gone_pid_of_this_kernel_and_namespace_is_dead() -> None:
    assert identity.proven_dead(exited_process(), me().boot_id, me().pid_namespace, me().start_time)


def test_a_pid_now_held_by_a_process_that_started_at_another_time_is_dead() -> None:
    # Our own pid, recorded with another start time: a scheduler that died and whose pid was reused.
    assert identity.proven_dead(os.getpid(), me().boot_id, me().pid_namespace, me().start_time - 1)


def test_a_zombie_is_dead() -> None:
    process = subprocess.Popen(["true"])  # not reaped until wait(): a zombie meanwhile
    try:
        wait_for(lambda: Path(f"/proc/{process.pid}/stat").read_text().split(") ")[1][0] == "Z", timeout=10)
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        started = int(stat[stat.rindex(")") + 2 :].split()[19])
        assert identity.proven_dead(process.pid, me().boot_id, me().pid_namespace, started)
    finally:
        process.wait()


@pytest.mark.parametrize(
    ("boot_id", "pid_namespace"),
    [
        (str(uuid.uuid4()), None),  # another boot or another machine
        (None, "pid:[1]"),  # another container's PID namespace
        ("", None),  # rows written before identities were recorded
        (None, ""),
    ],
    ids=["other-boot", "other-namespace", "no-boot-id", "no-namespace"],
)
def test_a_gone_pid_proves_nothing_outside_this_kernel_and_namespace(
    boot_id: str | None, pid_namespace: str | None
) -> None:
    assert not identity.proven_dead(
        exited_process(),
        me().boot_id if boot_id is None else boot_id,
        me().pid_namespace if pid_namespace is None else pid_namespace,
        me().start_time,
    )


def test_without_a_start_time_nothing_is_proven() -> None:
    assert not identity.proven_dead(exited_process(), me().boot_id, me().pid_namespace, None)


def scheduler(pid: int, **fields: str | int | None) -> SchedulerInstance:
    """A scheduler row of this host, beating now, with our identity unless ``fields`` say otherwise."""
    return SchedulerInstance.objects.create(
        hostname=socket.gethostname(), pid=pid, **{**identity.fields(), "process_started": 1, **fields}
    )


@pytest.mark.django_db
def test_only_schedulers_proven_dead_are_dead_local_schedulers() -> None:
    dead = scheduler(exited_process())
    scheduler(exited_process(), pid_namespace="pid:[1]")
    scheduler(exited_process(), boot_id=str(uuid.uuid4()))
    scheduler(exited_process(), boot_id="", pid_namespace="", process_started=None)  # older code
    scheduler(os.getpid(), process_started=me().start_time)  # alive

    assert dead_local_schedulers() == [dead.pk]


@pytest.mark.django_db
def test_a_lease_held_in_another_pid_namespace_is_not_taken_before_it_expires() -> None:
    holder = scheduler(exited_process(), pid_namespace="pid:[1]")
    assert Leadership(holder.pk).claim()

    assert not Leadership(uuid.uuid4()).claim()
    assert Lease.objects.get().holder == holder.pk


@pytest.mark.django_db
def test_a_lease_held_by_a_scheduler_proven_dead_is_taken_at_once() -> None:
    holder = scheduler(exited_process())
    assert Leadership(holder.pk).claim()

    assert Leadership(uuid.uuid4()).claim()


@pytest.mark.django_db
def test_runs_of_a_beating_scheduler_in_another_pid_namespace_are_not_interrupted() -> None:
    other = scheduler(exited_process(), pid_namespace="pid:[1]")
    dead = scheduler(exited_process())
    now = timezone.now()
    kept = Execution.objects.create(job_id="a", status="running", scheduled_at=now, instance=other)
    orphan = Execution.objects.create(job_id="b", status="running", scheduled_at=now, instance=dead)

    assert recover_interrupted() == 1

    assert Execution.objects.get(pk=kept.pk).status == Execution.Status.RUNNING
    assert Execution.objects.get(pk=orphan.pk).status == Execution.Status.INTERRUPTED
