"""Captured output: what a run logs and prints is kept with its row, capped head and tail, in
every placement, and shown on the run's admin page and in the API."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime

import pytest
from django.test import Client, override_settings

from scheduling import job
from scheduling.models import Execution
from scheduling.runs import output
from scheduling.runs.call import call_job
from scheduling.runs.output import Capped
from scheduling.runtime.dispatch import Dispatcher
from tests.conftest import wait_for
from tests.support import jobs
from tests.support.task_worker import work_off
from tests.test_tasks import dispatch_due

Status = Execution.Status


# The cap


def test_text_under_the_limit_is_kept_whole() -> None:
    kept = Capped(10)
    kept.write("abc")
    kept.write("defg")
    assert (kept.value(), kept.cut) == ("abcdefg", 0)


def test_text_over_the_limit_keeps_its_first_and_last_half_and_says_how_much_was_cut() -> None:
    kept = Capped(10)
    for number in range(100):
        kept.write(f"{number:02d}")
    assert kept.value() == "00010\n[… 190 characters cut …]\n79899"
    assert kept.cut == 190


def test_the_tail_holds_bounded_memory_however_much_is_written() -> None:
    kept = Capped(100)
    for _ in range(10_000):
        kept.write("x" * 37)
    assert kept._tail_length == 50
    assert sum(len(part) for part in kept._tail) == 50
    assert kept.cut == 10_000 * 37 - 100


# What call_job captures, in the process that runs the code


def test_a_run_keeps_what_it_printed_to_stdout_and_stderr_and_what_it_logged() -> None:
    outcome = call_job("talker", jobs.talk, ("hello",), {})
    assert outcome.status == Status.SUCCEEDED
    lines = outcome.output.splitlines()
    assert lines[0] == "stdout: hello"
    assert lines[1] == "stderr: hello"
    assert lines[2].endswith(" WARNING tests.support.jobs: logged: hello")
    assert "Running job" not in outcome.output  # the scheduler's own records are in the row


def test_a_failed_run_keeps_what_it_logged_before_failing() -> None:
    outcome = call_job("talker", jobs.talk_then_fail, ("disk full",), {})
    assert outcome.status == Status.FAILED
    assert "WARNING tests.support.jobs: about to fail: disk full" in outcome.output
    assert outcome.exception == "ValueError: disk full"


def test_an_async_job_keeps_what_its_coroutine_logged() -> None:
    outcome = call_job("talker", jobs.talk_async, ("tick",), {})
    assert "logged by a coroutine: tick" in outcome.output


def test_runs_going_on_together_in_threads_keep_their_own_output() -> None:
    outcomes = {}
    go = threading.Barrier(2)

    def run(word: str) -> None:
        go.wait()
        outcomes[word] = call_job(word, jobs.talk, (word, 50), {})

    threads = [threading.Thread(target=run, args=(word,)) for word in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["left"].output.count("left") == 150
    assert "right" not in outcomes["left"].output
    assert outcomes["right"].output.count("right") == 150
    assert "left" not in outcomes["right"].output


def test_writes_outside_a_run_go_where_they_went_before(capsys: pytest.CaptureFixture[str]) -> None:
    call_job("talker", jobs.talk, ("inside",), {})
    print("outside a run")
    print("to stderr", file=sys.stderr)
    logging.getLogger("tests.support.jobs").warning("logged outside")
    captured = capsys.readouterr()
    assert "outside a run" in captured.out
    assert "to stderr" in captured.err
    assert "inside" not in captured.out + captured.err


@override_settings(SCHEDULING_OUTPUT_LIMIT=40)
def test_a_run_that_writes_more_than_the_limit_keeps_its_head_and_tail() -> None:
    outcome = call_job("talker", jobs.talk, ("x", 100), {})
    assert outcome.output.startswith("stdout: x\nstderr: x\n")
    assert "characters cut" in outcome.output
    assert outcome.output.endswith(".jobs: logged: x\n")


@override_settings(SCHEDULING_OUTPUT_LIMIT=0)
def test_a_limit_of_0_captures_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = call_job("talker", jobs.talk, ("loud",), {})
    assert outcome.output == ""
    assert "stdout: loud" in capsys.readouterr().out


# Kept with the run's row, in every placement


def ended(job_id: str) -> Execution:
    return wait_for(
        lambda: Execution.objects.filter(job_id=job_id, status=Status.SUCCEEDED).first(), timeout=60
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runs_in", ["threads", "processes", "tasks"])
def test_the_output_is_written_with_the_outcome_wherever_the_job_runs(
    registry: dict, pooled: Dispatcher, runs_in: str
) -> None:
    job(interval=30, id="talker", runs_in=runs_in, args=[runs_in])(jobs.talk)
    dispatch_due(registry, pooled)
    if runs_in == "tasks":
        work_off()
    run = ended("talker")
    assert f"stdout: {runs_in}\nstderr: {runs_in}\n" in run.output
    assert f"logged: {runs_in}" in run.output


# Shown where a run is shown


@pytest.mark.django_db
def test_the_runs_page_shows_its_output_escaped_and_the_list_does_not_load_it(admin_client: Client) -> None:
    run = Execution.objects.create(
        job_id="talker",
        scheduled_at=datetime(2026, 12, 6, 9, tzinfo=UTC),
        status=Status.SUCCEEDED,
        output="stdout: <script>alert(1)</script>\n",
    )
    page = admin_client.get(f"/admin/scheduling/execution/{run.pk}/change/").content.decode()
    assert "stdout: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    listing = admin_client.get("/admin/scheduling/execution/")
    listed = listing.context["cl"].result_list[0]
    assert "output" in listed.get_deferred_fields()

    detail = admin_client.get(f"/scheduling/api/runs/{run.pk}/").json()
    assert detail["output"] == "stdout: <script>alert(1)</script>\n"
    assert "output" not in admin_client.get("/scheduling/api/runs/").json()["runs"][0]


def test_text_no_database_stores_is_made_storable() -> None:
    kept = Capped(100)
    kept.write("a\x00b \udcff")
    assert kept.value() == "a\ufffdb \\udcff"


@pytest.mark.django_db(transaction=True)
def test_a_run_printing_a_nul_and_a_lone_surrogate_is_recorded_and_so_are_the_next(
    registry: dict, dispatcher: Dispatcher
) -> None:
    job(interval=30, id="binary")(jobs.talk_binary)
    job(interval=30, id="talker", args=["after"])(jobs.talk)
    dispatch_due(registry, dispatcher)
    run = wait_for(lambda: Execution.objects.filter(job_id="binary", status=Status.SUCCEEDED).first())
    assert run.output == "bytes: \ufffd and \\udcff\n"
    assert wait_for(lambda: Execution.objects.filter(job_id="talker", status=Status.SUCCEEDED).exists())


def test_a_warning_outside_a_run_still_reaches_stderr_when_no_handler_takes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call_job("talker", jobs.talk, ("inside",), {})  # the capture is in place from now on
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [handler for handler in saved if handler is output._handler]
    try:
        logging.getLogger("tests.nobody.listens").warning("heard anyway")
    finally:
        root.handlers = saved
    assert "heard anyway" in capsys.readouterr().err
