"""Run now with arguments: checked by the validator, carried by the request and the run's row,
used by every placement, while the stored job keeps its own."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation
from django_apscheduler.models import DjangoJob

from scheduling import control, job, tokens, validation
from scheduling.history.recorder import Recorder
from scheduling.history.rows import Origin
from scheduling.models import Execution, RunRequest
from scheduling.placement import RunsIn
from scheduling.runs.processes import ProcessPool
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.runtime.service import Runner
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import wait_for
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
    assert validation.run_arguments(jobs.write_arguments, None, {"label": "x"}, ["p"]) == (
        None,
        {"label": "x"},
    )
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
        (["a\ud800b"], None, "args", "invalid_text"),  # a lone surrogate: not text any database stores
        (None, {"\udfff": 1}, "kwargs", "invalid_text"),
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
    assert (request.args, request.kwargs, request.requested_by) == (
        ["other.json", 3],
        {"label": "given"},
        "alice",
    )


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

    with pytest.raises(
        control.JobLoadError, match=r"its function tests\.support\.jobs:renamed_away cannot be imported"
    ):
        control.run_now("writer", args=["other.json"])
    assert not RunRequest.objects.exists()


# The scheduler's side: every placement runs the request's arguments, the job keeps its own


def run_requested(dispatcher: Dispatcher, registry: dict, job_id: str, **arguments) -> Execution:
    sync(dispatcher.store, registry.values())
    request = control.run_now(job_id, "alice", **arguments)
    origin = Origin(Execution.Origin.MANUAL, "alice", request.args, request.kwargs)
    dispatcher.run_requested(dispatcher.store.lookup_job(job_id), timezone.now(), origin, lambda: True)
    threads = dispatcher.targets[RunsIn.THREADS]
    assert isinstance(threads, ThreadTarget)
    assert threads.wait(60)
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
    assert (execution.args, execution.kwargs, execution.requested_by) == (
        [str(given), 2],
        {"label": "given"},
        "alice",
    )
    assert dispatcher.store.lookup_job("writer").args == (str(stored),)


def test_a_task_worker_takes_the_arguments_from_the_row_not_the_task(
    registry: dict, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    given = tmp_path / "given.json"
    job(interval=3600, id="writer", args=[str(tmp_path / "stored.json")], runs_in="tasks")(
        jobs.write_arguments
    )
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


# manage.py scheduling run JOB --args --kwargs


@pytest.fixture
def writer(registry: dict) -> None:
    job(interval=3600, id="writer", args=["stored.json"])(jobs.write_arguments)
    job(interval=3600, id="other")(jobs.succeed)
    sync(JobStore(), registry.values())


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("scheduling", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_run_command_takes_arguments_for_one_job(writer: None) -> None:
    assert "writer: run requested" in command(
        "run", "writer", "--args", '["given.json", 2]', "--kwargs", '{"label": "x"}'
    )

    request = RunRequest.objects.get()
    assert (request.args, request.kwargs) == (["given.json", 2], {"label": "x"})
    assert request.requested_by.startswith("cli:")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["writer", "other", "--args", "[]"], "exactly one job id"),
        (["writer", "--args", "[1,"], "--args: The body is not valid JSON"),
        (["writer", "--kwargs", "NaN"], "--kwargs: NaN is not a JSON number"),
        (["writer", "--args", '{"a": 1}'], "(args): args must be a JSON array"),
        (
            ["writer", "--kwargs", '{"colour": "red"}'],
            "(kwargs.colour): the arguments do not match write_arguments",
        ),
        (["writer", "--args", "[]"], "missing a required argument: 'path'"),
    ],
)
def test_the_run_command_refuses_bad_arguments_saying_why(writer: None, args: list[str], words: str) -> None:
    with pytest.raises(CommandError, match=re.escape(words)):
        command("run", *args)
    assert not RunRequest.objects.exists()


# POST /api/jobs/<id>/run/ with {"args": [...], "kwargs": {...}}

API = "/scheduling/api"


def run_job_token() -> dict[str, str]:
    user, _ = User.objects.get_or_create(username="deployer")
    user.user_permissions.add(
        Permission.objects.get(codename="run_job", content_type__app_label="scheduling")
    )
    return {"Authorization": f"Bearer {tokens.create(user, 'test')[1]}"}


def post_run(client: Client, body: str, job_id: str = "writer"):
    return client.post(
        f"{API}/jobs/{job_id}/run/", body, content_type="application/json", headers=run_job_token()
    )


def test_the_api_runs_now_with_the_arguments_of_the_body(client: Client, writer: None) -> None:
    response = post_run(client, json.dumps({"args": ["given.json"], "kwargs": {"label": "x"}}))

    assert response.status_code == 202, response.json()
    request = RunRequest.objects.get()
    assert (request.args, request.kwargs, request.requested_by) == (
        ["given.json"],
        {"label": "x"},
        "deployer",
    )
    assert LogEntry.objects.get().change_message == "Requested a run now with its own args and kwargs (API)"


def test_the_api_without_a_body_or_with_nulls_runs_with_the_jobs_own(client: Client, writer: None) -> None:
    assert post_run(client, "").status_code == 202
    assert post_run(client, '{"args": null, "kwargs": null}').status_code == 202
    assert list(RunRequest.objects.values_list("args", "kwargs")) == [(None, None), (None, None)]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ('{"kwargs": {"colour": "red"}}', 400, "signature_mismatch", "kwargs.colour"),
        ('{"args": []}', 400, "signature_mismatch", "args"),
        ('{"args": {"a": 1}}', 400, "invalid_type", "args"),
        ('{"kwargs": [1]}', 400, "invalid_type", "kwargs"),
        ('{"args": ["a\\u0000"]}', 400, "invalid_text", "args"),
        ('{"argz": []}', 400, "unknown_field", "argz"),
        ('{"args": [1e999]}', 400, "invalid_number", None),
        ("[1, 2]", 400, "invalid_body", None),
        (json.dumps({"args": ["x" * 20000]}), 413, "too_large", None),
    ],
)
def test_the_api_refuses_bad_arguments_naming_the_field(
    client: Client, writer: None, body: str, status: int, code: str, field: str | None
) -> None:
    response = post_run(client, body)

    assert response.status_code == status
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert not RunRequest.objects.exists()


def test_the_api_names_a_function_that_cannot_be_imported(client: Client, writer: None) -> None:
    state = pickle.loads(bytes(DjangoJob.objects.get(id="writer").job_state))  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="writer").update(job_state=pickle.dumps(state))

    response = post_run(client, '{"args": ["given.json"]}')

    assert (response.status_code, response.json()["code"]) == (409, "job_cannot_be_loaded")
    assert "tests.support.jobs:renamed_away cannot be imported" in response.json()["error"]


def test_the_api_shows_the_arguments_a_run_used(client: Client, writer: None) -> None:
    Execution.objects.create(
        job_id="writer", status="succeeded", scheduled_at=timezone.now(), kwargs={"label": "x"}
    )
    user = User.objects.create_superuser("admin", password="pw")

    run = client.get(
        f"{API}/runs/", headers={"Authorization": f"Bearer {tokens.create(user, 'test')[1]}"}
    ).json()["runs"][0]

    assert (run["args"], run["kwargs"]) == (None, {"label": "x"})


# The admin: Run now with arguments, and the run's page


def arguments_page(job_id: str = "writer") -> str:
    return reverse("admin:scheduling_job_run_with_arguments", args=[quote(job_id)])


def test_the_admin_form_starts_from_the_jobs_own_arguments(admin_client: Client, writer: None) -> None:
    page = admin_client.get(reverse("admin:scheduling_job_change", args=["writer"])).text
    assert arguments_page() in page

    form = admin_client.get(arguments_page())

    assert form.status_code == 200
    assert form.context["form"]["args"].value() == '["stored.json"]'
    assert form.context["form"]["kwargs"].value() == "{}"


def test_the_admin_runs_now_with_arguments_and_records_who_asked(admin_client: Client, writer: None) -> None:
    response = admin_client.post(
        arguments_page(), {"args": '["given.json", 2]', "kwargs": '{"label": "x"}'}, follow=True
    )

    assert "Asked the scheduler to run writer now." in response.text
    request = RunRequest.objects.get()
    assert (request.args, request.kwargs, request.requested_by) == (
        ["given.json", 2],
        {"label": "x"},
        "admin",
    )
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.change_message) == (
        "writer",
        "Requested a run now with its own args and kwargs",
    )


def test_the_admin_form_unchanged_runs_with_the_jobs_own(admin_client: Client, writer: None) -> None:
    admin_client.post(arguments_page(), {"args": '["stored.json"]', "kwargs": "{}"})

    assert list(RunRequest.objects.values_list("args", "kwargs")) == [(None, None)]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"args": "[1,", "kwargs": ""}, "args", "Enter a valid JSON."),
        ({"args": '{"a": 1}', "kwargs": ""}, "args", "args must be a JSON array"),
        (
            {"args": "", "kwargs": '{"colour": "red"}'},
            "kwargs",
            "unexpected keyword argument &#x27;colour&#x27;",
        ),
        ({"args": "[]", "kwargs": ""}, "args", "missing a required argument: &#x27;path&#x27;"),
    ],
)
def test_the_admin_form_shows_bad_arguments_next_to_their_field(
    admin_client: Client, writer: None, data: dict, field: str, words: str
) -> None:
    response = admin_client.post(arguments_page(), data)

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    row = response.text.split(f"field-{field}")[1].split("form-row")[0]
    assert words in row
    assert not RunRequest.objects.exists()


def test_the_admin_form_shows_the_jobs_arguments_only_to_who_may_view_the_job(writer: None) -> None:
    user = User.objects.create_user("runner", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="run_job", content_type__app_label="scheduling")
    )
    client = Client()
    client.force_login(user)

    assert client.get(arguments_page()).status_code == 403
    assert client.post(arguments_page(), {"args": '["x"]'}).status_code == 403
    assert not RunRequest.objects.exists()


def test_the_admin_form_during_maintenance_runs_only_when_told_to_run_anyway(
    admin_client: Client, writer: None
) -> None:
    assert "Run anyway" not in admin_client.get(arguments_page()).text
    control.start_maintenance("DB migration", "alice")

    assert "Run anyway" in admin_client.get(arguments_page()).text
    refused = admin_client.post(arguments_page(), {"args": '["given.json"]', "kwargs": ""})
    assert refused.status_code == 200
    assert "paused for maintenance (DB migration)" in refused.text
    assert not RunRequest.objects.exists()

    forced = admin_client.post(arguments_page(), {"args": '["given.json"]', "kwargs": "", "force": "on"})

    assert forced.status_code == 302
    request = RunRequest.objects.get()
    assert (request.force, request.args) == (True, ["given.json"])
    entry = LogEntry.objects.get(object_id="writer")
    assert entry.change_message == "Requested a run now with its own args, forced during maintenance"


def test_the_admin_form_needs_the_run_permission(writer: None) -> None:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job", content_type__app_label="scheduling")
    )
    client = Client()
    client.force_login(user)

    assert client.get(arguments_page()).status_code == 403
    assert client.post(arguments_page(), {"args": '["x"]'}).status_code == 403
    assert arguments_page() not in client.get(reverse("admin:scheduling_job_change", args=["writer"])).text
    assert not RunRequest.objects.exists()


def test_the_run_page_shows_the_arguments_it_used_and_who_asked(admin_client: Client, writer: None) -> None:
    own = Execution.objects.create(job_id="writer", status="succeeded", scheduled_at=timezone.now())
    given = Execution.objects.create(
        job_id="writer",
        status="succeeded",
        origin="manual",
        requested_by="alice",
        scheduled_at=timezone.now(),
        kwargs={"label": "x"},
    )

    page = admin_client.get(reverse("admin:scheduling_execution_change", args=[given.pk])).text
    assert "manual, by alice" in page
    assert "kwargs: {&quot;label&quot;: &quot;x&quot;}" in page
    assert "args: the job&#x27;s own" in page
    assert (
        "the job&#x27;s own"
        in admin_client.get(reverse("admin:scheduling_execution_change", args=[own.pk])).text
    )


def test_a_run_requested_with_arguments_runs_with_them_in_the_process_pool(
    registry: dict, tmp_path: Path
) -> None:
    stored, given = tmp_path / "stored.json", tmp_path / "given.json"
    job(interval=3600, id="writer", args=[str(stored)], runs_in="processes")(jobs.write_arguments)
    recorder, processes = Recorder(), ProcessPool(1)
    threads = ThreadTarget(recorder, max_workers=1)
    try:
        execution = run_requested(
            Dispatcher(JobStore(), recorder, run_targets(threads, processes)),
            registry,
            "writer",
            args=[str(given)],
            kwargs={"label": "given"},
        )
    finally:
        threads.shutdown()
        processes.shutdown()

    assert (execution.status, execution.ran_in) == ("succeeded", "processes"), execution.exception
    assert used(given) == {"path": str(given), "count": 1, "label": "given"}
    assert not stored.exists()


def test_the_running_scheduler_takes_a_request_with_arguments_and_runs_with_them(
    registry: dict, tmp_path: Path
) -> None:
    stored, given = tmp_path / "stored.json", tmp_path / "given.json"
    job(interval=3600, id="writer", args=[str(stored)])(jobs.write_arguments)
    runner = Runner(threads=2)
    runner.start()
    try:
        control.run_now("writer", "alice", args=[str(given)], kwargs={"label": "given"})
        run = wait_for(lambda: Execution.objects.filter(job_id="writer", status="succeeded").first())
    finally:
        runner.stop(timeout=5)

    assert (run.origin, run.requested_by, run.args, run.kwargs) == (
        "manual",
        "alice",
        [str(given)],
        {"label": "given"},
    )
    assert used(given)["label"] == "given"
    assert not stored.exists()
    assert not RunRequest.objects.exists()


def test_the_admin_form_of_a_job_whose_function_is_gone_says_so(admin_client: Client, writer: None) -> None:
    state = pickle.loads(bytes(DjangoJob.objects.get(id="writer").job_state))  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="writer").update(job_state=pickle.dumps(state))

    response = admin_client.post(arguments_page(), {"args": '["given.json"]', "kwargs": ""})

    assert response.status_code == 200
    assert "tests.support.jobs:renamed_away cannot be imported" in response.text
    assert not RunRequest.objects.exists()


# In another language: Python's words for a mismatch, translated


@pytest.mark.parametrize(
    ("args", "kwargs", "ja", "zh"),
    [
        ([], None, "必須の引数 'path' がありません", "缺少必需的参数 'path'"),
        (["p", 1, 2], None, "位置引数が多すぎます", "位置参数过多"),
        (
            ["p"],
            {"colour": "red"},
            "予期しないキーワード引数 'colour' が渡されました",
            "收到意外的关键字参数 'colour'",
        ),
        (["p"], {"path": "q"}, "引数 'path' に複数の値が渡されました", "参数 'path' 收到多个值"),
    ],
)
def test_a_signature_mismatch_is_said_in_the_active_language(
    args: list, kwargs: dict | None, ja: str, zh: str
) -> None:
    for language, words in (("ja", ja), ("zh-hans", zh)):
        with translation.override(language), pytest.raises(validation.InputError) as caught:
            validation.run_arguments(jobs.write_arguments, args, kwargs)
        assert words in str(caught.value), str(caught.value)


def test_an_unknown_bind_error_is_shown_as_python_says_it() -> None:
    with translation.override("ja"):
        assert validation.signature_error(TypeError("something new")) == "something new"


def test_the_api_and_the_admin_form_say_a_mismatch_in_the_requested_language(
    client: Client, admin_client: Client, writer: None
) -> None:
    with translation.override(translation.get_language()):
        answer = client.post(
            f"{API}/jobs/writer/run/",
            '{"args": ["p", 1, 2]}',
            content_type="application/json",
            headers={**run_job_token(), "accept-language": "ja"},
        ).json()
        page = admin_client.post(
            arguments_page(), {"args": "[]", "kwargs": ""}, headers={"accept-language": "zh-hans"}
        ).text
    assert answer["code"] == "signature_mismatch"
    assert "位置引数が多すぎます" in answer["error"], answer
    assert "缺少必需的参数 &#x27;path&#x27;" in page
    assert not RunRequest.objects.exists()
