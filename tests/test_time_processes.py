"""runscheduler across a clock change that happens during the test.

The zone is compiled with zic (Debian's libc-bin) into a temporary folder that the scheduler
process finds through PYTHONTZPATH: one minute of daylight saving that ends 20 s after the
process starts, so the wall clock goes back by a minute while jobs are due.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import zoneinfo
from pathlib import Path

import pytest
from django.db import connection

from scheduling.models import Execution
from tests.conftest import wait_for

# Time zones are the scheduler's own arithmetic, the same on every database: one cell is enough.
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="runs once, in the SQLite cells of the matrix"),
]

UTC = dt.UTC
ZONE = "Test/FallBack"
SLOT = 5  # seconds, as tests/support/process_jobs_time.py declares
JITTER = 4


def compile_zone(folder: Path, fall_back: dt.datetime) -> None:
    zic = shutil.which("zic") or "/usr/sbin/zic"
    if not Path(zic).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("zic is missing (Debian's libc-bin); .ci/run must install it")
        pytest.skip("zic is not installed")
    source = folder / "fallback.zi"
    source.write_text(f"Zone {ZONE} 0:01 - TST1 {fall_back:%Y %b %d %H:%M:%S}u\n\t\t0:00 - TST0\n")
    subprocess.run([zic, "-d", str(folder), str(source)], check=True)


def test_across_a_fall_back_the_heartbeat_goes_on_and_the_jitter_job_runs_once_per_slot(
    scheduler_process, tmp_path: Path
) -> None:
    fall_back = (dt.datetime.now(UTC) + dt.timedelta(seconds=20)).replace(microsecond=0)
    compile_zone(tmp_path, fall_back)

    scheduler_process(
        "tests.support.process_jobs_time",
        # Ours first, then the system's zones (the site's TIME_ZONE must still be found).
        env={"PYTHONTZPATH": os.pathsep.join([str(tmp_path), *zoneinfo.TZPATH]), "TEST_TIME_ZONE": ZONE},
    )
    # Poll with a deadline: both jobs must be seen running well after the clocks went back.
    after = fall_back + dt.timedelta(seconds=3 * SLOT)
    for job_id in ("time.heartbeat", "time.jitter"):
        ran_after = Execution.objects.filter(job_id=job_id, scheduled_at__gt=after)
        wait_for(ran_after.exists, timeout=90, interval=0.5)

    fires = list(
        Execution.objects.filter(job_id="time.jitter")
        .order_by("scheduled_at")
        .values_list("scheduled_at", flat=True)
    )
    slots = [int(moment.timestamp()) // SLOT for moment in fires]
    # Once per slot: none twice (a fire time that went backwards), none missing (before the fix,
    # the jitter job fell silent for the whole repeated minute). Late runs keep their slot's time.
    assert slots == list(range(slots[0], slots[-1] + 1)), fires
    for moment, slot in zip(fires, slots, strict=True):
        assert moment.timestamp() - slot * SLOT <= JITTER, moment  # inside [slot, slot + jitter]
    assert any(moment < fall_back for moment in fires)
    assert any(moment > fall_back for moment in fires)
    beats = Execution.objects.filter(job_id="time.heartbeat")
    assert beats.filter(scheduled_at__lt=fall_back).exists()
    assert beats.filter(scheduled_at__gt=after).exists()
