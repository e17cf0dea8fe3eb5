"""Run now with arguments: checked by the validator, carried by the request and the run's row,
used by every placement, while the stored job keeps its own."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job, validation
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Origin
from scheduling.models import Execution, RunRequest
from scheduling.placement import RunsIn
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs
from tests.support.task_worker import work_off

pytestmark = pytest.mark.django_db(transaction=True)


def used(path: Path) -> dict:
    return json.loads(path.read_text())


# The validator


def test_arguments_that_bind_are_returned_as_json() -> None:
    assert validation.run_arguments(jobs.write_arguments, ("p", 2), {"label": "x"}) == (
        ["p", 2],
        {"label": "x"},
    )


def test_arguments_not_given_keep_the_jobs_own_and_are_checked_with_them() -> None:
    assert validation.run_arguments(jobs.write_arguments, None, {"label": "x"}, ["p"]) == (None, {"label": "x"})
    with pytest.raises(validation.InputError, match="missing a required argument: 'path'") as caught:
        validation.run_arguments(jobs.write_arguments, None, {"label": "x"})
    assert (caught.value.field, caught.value.code) == ("kwargs", "signature_mismatch")


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "words"),
    [
        ([], None, "args", "missing a required argument: 'path'"),
        (["p", 1, 2], None, "args", "too many positional arguments"),
        (["p"], {"colour": "red"}, "kwargs.colour", "unexpected keyword argument 'colour'"),
        (["p"], {"path": "q"}, "kwargs.path", "multiple values for argument 'path'"),
        (["p", 1, "x"], None, "args", "too many positional arguments"),
    ],
)
def test_arguments_that_do_not_match_the_signature_are_refused_naming_the_parameter(
    args: list, kwargs: dict | None, field: str, words: str
) -> None:
    with pytest.raises(validation.InputError, match=words) as caught:
        validation.run_arguments(jobs.write_arguments, args, kwargs)
    assert (caught.value.field, caught.value.code) == (field, "signature_mismatch")
    assert "write_arguments(path, count=1, *, label='stored')" in str(caught.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "code"),
    [
        ("p", None, "args", "invalid_type"),
        (None, ["p"], "kwargs", "invalid_type"),
        (["p"], {1: "x"}, "kwargs", "invalid_type"),
        ([object()], None, "args", "invalid_type"),
        ([float("nan")], None, "args", "invalid_number"),
        ([10**30], None, "args", "invalid_number"),
        (["a\x00b"], None, "args", "invalid_text"),
        (["x" * validation.MAX_ARGUMENTS_BYTES], None, "args", "too_large"),
        (None, {"label": "x" * validation.MAX_ARGUMENTS_BYTES}, "kwargs", "too_large"),
        ([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], None, "args", "too_deep"),
    ],
)
def test_arguments_that_are_not_small_plain_json_are_refused(args, kwargs, field: str, code: str) -> None:
    with pytest.raises(validation.InputError) as caught:
        validation.run_arguments(jobs.write_arguments, args, kwargs, ["p"])
    assert (caught.value.field, caught.value.code) == (field, code)
    assert field.split(".")[0] in str(caught.value)


# control.run_now


def test_run_now_with_arguments_records_them_on_the_request(registry: dict) -> None:
    job(interval=3600, id="writer", args=["stored.json"])(jobs.write_arguments)
    sync(JobStore(), registry.values())

    request = control.run_now("writer", "alice", args=["other.json", 3], kwargs={"label": "given"})

    request.refresh_from_db()
    assert (request.args, request.kwargs, request.requested_by) == (["other.json", 3], {"label": "given"}, "alice")


def test_run_now_records_arguments_equal_to_the_jobs_own_as_the_jobs(registry: dict) -> None:
    job(interval=3600, id="writer", args=["stored.json"])(jobs.write_arguments)
    sync(JobStore(), registry.values())

    request = control.run_now("writer", args=["stored.json"], kwargs={"label": "given"})

    assert (request.args, request.kwargs) == (None, {"label": "given"})


def test_run_now_with_arguments_that_do_not_match_records_nothing(registry: dict) -> None:
    job(interval=3600, id="writer", args=["stored.json"])(jobs.write_arguments)
    sync(JobStore(), registry.values())

    with pytest.raises(validation.InputError, match="unexpected keyword argument 'colour'"):
        control.run_now("writer", kwargs={"colour": "red"})
    assert not RunRequest.objects.exists()


def test_run_now_with_arguments_for_a_function_that_cannot_be_imported_names_it(registry: dict) -> None:
    job(interval=3600, id="writer", args=["stored.json"])(jobs.write_arguments)
    sync(JobStore(), registry.values())
    state = pickle.loads(bytes(DjangoJob.objects.get(id="writer").job_state))  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="writer").update(job_state=pickle.dumps(state))

    with pytest.raises(control.JobLoadError, match="its function tests.support.jobs:renamed_away cannot be imported"):
        control.run_now("writer", args=["other.json"])
    assert not RunRequest.objects.exists()


# The scheduler's side: every placement runs the request's arguments, the job keeps its own


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    recorder = Recorder()
    pool = ThreadTarget(recorder, max_workers=2)
    yield Dispatcher(JobStore(), recorder, run_targets(pool))
    pool.shutdown()


def run_requested(dispatcher: Dispatcher, registry: dict, job_id: str, **arguments) -> Execution:
    sync(dispatcher.store, registry.values())
    request = control.run_now(job_id, "alice", **arguments)
    origin = Origin(Execution.Origin.MANUAL, "alice", request.args, request.kwargs)
    dispatcher.run_requested(dispatcher.store.lookup_job(job_id), timezone.now(), origin, lambda: True)
    assert dispatcher.targets[RunsIn.THREADS].wait(60)
    return Execution.objects.get(job_id=job_id)


@pytest.mark.parametrize("runs_in", ["threads", "tasks"])
def test_a_run_requested_with_arguments_runs_with_them_and_records_them(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path, runs_in: str
) -> None:
    stored, given = tmp_path / "stored.json", tmp_path / "given.json"
    job(interval=3600, id="writer", args=[str(stored)], runs_in=runs_in)(jobs.write_arguments)

    execution = run_requested(dispatcher, registry, "writer", args=[str(given), 2], kwargs={"label": "given"})
    work_off()

    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.exception
    assert used(given) == {"path": str(given), "count": 2, "label": "given"}
    assert not stored.exists()
    assert (execution.args, execution.kwargs, execution.requested_by) == ([str(given), 2], {"label": "given"}, "alice")
    assert dispatcher.store.lookup_job("writer").args == (str(stored),)


def test_a_task_worker_takes_the_arguments_from_the_row_not_the_task(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    given = tmp_path / "given.json"
    job(interval=3600, id="writer", args=[str(tmp_path / "stored.json")], runs_in="tasks")(jobs.write_arguments)
    execution = run_requested(dispatcher, registry, "writer", kwargs={"label": "given"})
    # Whatever the task says, the row decides: here the row is changed after enqueueing.
    Execution.objects.filter(pk=execution.pk).update(args=[str(given)])

    work_off()

    assert used(given) == {"path": str(given), "count": 1, "label": "given"}


def test_a_run_requested_without_arguments_records_none_and_uses_the_jobs(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    stored = tmp_path / "stored.json"
    job(interval=3600, id="writer", args=[str(stored)])(jobs.write_arguments)

    execution = run_requested(dispatcher, registry, "writer")

    assert (execution.status, execution.args, execution.kwargs) == ("succeeded", None, None)
    assert used(stored)["label"] == "stored"
