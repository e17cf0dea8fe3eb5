"""The admin over HTTP: lists in constant queries, actions that write intent, permissions, audit."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone, translation
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from scheduling import declarations, job, schedulable
from scheduling.models import Execution, RunRequest, SchedulerInstance
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

pytestmark = pytest.mark.django_db

JOBS = "/admin/scheduling/job/"


def declare_jobs(registry: dict, count: int) -> None:
    for number in range(count):
        job(interval={"minutes": number + 1}, id=f"job-{number}", name=f"Job {number}")(jobs.succeed)
    sync(JobStore(), registry.values())


def staff(*permissions: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="scheduling")
        )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("count", [10, 500])
def test_the_jobs_list_answers_in_the_same_number_of_queries_for_10_and_500_jobs(
    admin_client: Client, registry: dict, django_assert_num_queries, count: int
) -> None:
    declare_jobs(registry, count)
    Execution.objects.bulk_create(
        Execution(
            job_id=f"job-{n}",
            status="failed" if n % 2 else "succeeded",
            scheduled_at=timezone.now(),
            duration=1,
        )
        for n in range(count)
    )

    # The status panel's four (scheduler_status, the maintenance pause among them) included.
    with django_assert_num_queries(9):
        response = admin_client.get(JOBS + "?all=")

    assert response.status_code == 200


def test_the_jobs_list_says_what_each_job_is_doing(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 3)
    Execution.objects.create(job_id="job-2", status="failed", scheduled_at=timezone.now(), duration=0.5)
    Execution.objects.create(
        job_id="job-2",
        status="succeeded",
        scheduled_at=timezone.now() - timedelta(minutes=3),
        duration=1.5,
    )

    page = admin_client.get(JOBS).text

    assert "Job 2" in page
    assert "tests.support.jobs:succeed" in page
    assert "Every 3 minutes" in page
    assert any(f"in {minutes}\xa0minutes" in page for minutes in (2, 3))
    assert "50% succeeded, 1.00 s on average" in page
    assert "Failed" in page
    assert "No scheduler is running." in page


def test_a_broken_job_is_listed_as_broken(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)
    state = pickle.loads(bytes(DjangoJob.objects.get(id="job-0").job_state))  # noqa: S301 - our own test data
    state["func"] = "tests.support.jobs:renamed_away"
    DjangoJob.objects.filter(id="job-0").update(job_state=pickle.dumps(state))
    sync(JobStore(), [])

    response = admin_client.get(JOBS)

    assert "broken: function cannot be imported" in response.text
    assert "tests.support.jobs:renamed_away" in response.text


def test_run_now_records_a_request_for_the_scheduler_and_an_audit_entry(
    admin_client: Client, registry: dict
) -> None:
    declare_jobs(registry, 2)

    response = admin_client.post(
        JOBS, {"action": "run_now", "_selected_action": ["job-0", "job-1"]}, follow=True
    )

    assert sorted(RunRequest.objects.values_list("job_id", "requested_by")) == [
        ("job-0", "admin"),
        ("job-1", "admin"),
    ]
    assert "Asked the scheduler to run 2 jobs now." in response.text
    assert "No scheduler is running" in response.text
    assert LogEntry.objects.filter(object_id="job-0", change_message="Requested a run now").exists()
    assert not Execution.objects.exists(), "the web request must not run the job"


def test_run_now_does_not_warn_when_a_scheduler_is_alive(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)
    SchedulerInstance.objects.create(hostname="worker", pid=123, role="active")

    response = admin_client.post(JOBS, {"action": "run_now", "_selected_action": ["job-0"]}, follow=True)

    assert "Asked the scheduler to run 1 job now." in response.text
    assert "No scheduler is running" not in response.text
    assert "Scheduler running" in response.text


def test_pause_and_resume_change_the_store_and_are_audited(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)

    admin_client.post(JOBS, {"action": "pause", "_selected_action": ["job-0"]})
    assert DjangoJob.objects.get(id="job-0").next_run_time is None
    admin_client.post(JOBS, {"action": "resume", "_selected_action": ["job-0"]})
    assert DjangoJob.objects.get(id="job-0").next_run_time is not None

    assert list(LogEntry.objects.filter(object_id="job-0").values_list("change_message", flat=True)) == [
        "Resumed",
        "Paused",
    ]


def test_reset_records_the_schedule_it_replaced(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)
    admin_client.post(JOBS + "job-0/change/", form_data(every=7, unit="seconds"))

    admin_client.post(JOBS, {"action": "reset_schedule", "_selected_action": ["job-0"]})

    assert str(JobStore().lookup_job("job-0").trigger) == "interval[0:01:00]"
    assert LogEntry.objects.latest("action_time").get_change_message() == (
        "Reset the schedule to the code's declaration: from “Every 7 seconds; max instances 1, coalesce on, "
        "misfire grace 60 s” to “Every minute; max instances 1, coalesce on, misfire grace 60 s”"
    )


def test_the_job_page_has_buttons_and_recent_runs(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)
    Execution.objects.create(
        job_id="job-0", status="failed", scheduled_at=timezone.now(), exception="ValueError: x"
    )

    page = admin_client.get(JOBS + "job-0/change/").text
    for button in ('name="run"', 'name="pause"', 'name="reset"'):
        assert button in page
    assert "ValueError: x" in page

    admin_client.post(JOBS + "job-0/pause/")
    assert DjangoJob.objects.get(id="job-0").next_run_time is None
    assert 'name="resume"' in admin_client.get(JOBS + "job-0/change/").text


def test_the_page_and_buttons_of_a_job_whose_id_the_admin_quotes_work(
    admin_client: Client, registry: dict
) -> None:
    # The admin quotes "_" (as "_5F") in URLs: the default id of a declared job has one.
    job(interval={"minutes": 1}, id="myapp.jobs.nightly_cleanup")(jobs.succeed)
    sync(JobStore(), registry.values())
    Execution.objects.create(
        job_id="myapp.jobs.nightly_cleanup",
        status="failed",
        scheduled_at=timezone.now(),
        exception="ValueError: x",
    )
    url = JOBS + quote("myapp.jobs.nightly_cleanup") + "/"

    assert "ValueError: x" in admin_client.get(url + "change/").text

    response = admin_client.post(url + "pause/")
    assert response.status_code == 302
    assert response["Location"] == url + "change/"
    assert DjangoJob.objects.get(id="myapp.jobs.nightly_cleanup").next_run_time is None


def test_users_without_permissions_do_not_get_the_actions(registry: dict) -> None:
    declare_jobs(registry, 1)
    viewer = staff("view_job")

    page = viewer.get(JOBS).text
    assert 'value="run_now"' not in page
    assert 'value="pause"' not in page
    assert 'name="run"' not in viewer.get(JOBS + "job-0/change/").text
    assert viewer.post(JOBS + "job-0/run/").status_code == 403
    assert not RunRequest.objects.exists()


def test_each_permission_unlocks_its_own_actions(registry: dict) -> None:
    declare_jobs(registry, 1)
    runner = staff("view_job", "run_job")

    page = runner.get(JOBS).text
    assert 'value="run_now"' in page
    assert 'value="pause"' not in page
    assert 'value="reset_schedule"' not in page
    assert runner.post(JOBS + "job-0/pause/").status_code == 403


def test_the_admin_index_shows_the_scheduler_status(admin_client: Client) -> None:
    SchedulerInstance.objects.create(hostname="worker-1", pid=4242, role="active")
    SchedulerInstance.objects.create(hostname="worker-2", pid=4343, role="standby")

    page = admin_client.get("/admin/").text

    assert "Scheduler running" in page
    assert "worker-1 (pid 4242)" in page
    assert "1 standby ready to take over." in page


def test_the_status_panel_tells_when_only_standbys_are_left(admin_client: Client) -> None:
    SchedulerInstance.objects.create(hostname="worker-2", pid=4343, role="standby")

    page = admin_client.get("/admin/").text

    assert "No scheduler is running." in page
    assert "1 standby is waiting for the lease" in page


@pytest.mark.parametrize("count", [10, 500])
def test_the_executions_list_answers_in_the_same_number_of_queries_for_10_and_500_rows(
    admin_client: Client, django_assert_num_queries, count: int
) -> None:
    Execution.objects.bulk_create(
        Execution(job_id="a", status="failed", scheduled_at=timezone.now() - timedelta(seconds=n))
        for n in range(count)
    )

    with django_assert_num_queries(5):
        response = admin_client.get("/admin/scheduling/execution/")

    assert response.status_code == 200


def runs_counted_differently(count: int) -> None:
    """``count`` runs whose table statistics (PostgreSQL) still say ``count`` after a third of them
    are deleted: a page that reads them says one figure, one that counts says the other."""
    from django.db import connection

    Execution.objects.bulk_create(
        Execution(
            job_id=f"job-{n % 7}", status="failed" if n % 2 else "succeeded", scheduled_at=timezone.now()
        )
        for n in range(count)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE scheduling_execution")
    Execution.objects.filter(
        pk__in=list(Execution.objects.order_by("pk").values_list("pk", flat=True)[: count // 3])
    ).delete()


def test_a_history_of_millions_of_runs_is_numbered_from_the_planners_statistics(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting 10,000,000 runs took half a second of every page of the list on PostgreSQL."""
    from django.db import connection

    from scheduling.admin import paging

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's statistics: the other databases count")
    monkeypatch.setattr(paging, "ESTIMATE_FROM", 300)
    runs_counted_differently(300)

    page = admin_client.get("/admin/scheduling/execution/").text

    assert "300 executions" in page
    assert "the number comes from the database's statistics" in page


def test_a_small_history_and_a_filtered_list_are_counted(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduling.admin import paging

    runs_counted_differently(300)

    counted = admin_client.get("/admin/scheduling/execution/").text
    monkeypatch.setattr(paging, "ESTIMATE_FROM", 300)
    filtered = admin_client.get("/admin/scheduling/execution/?status__exact=failed").text

    assert "200 executions" in counted
    assert "100 executions" in filtered
    assert "statistics" not in counted + filtered


def test_the_runs_list_names_each_job_to_filter_by_until_there_are_too_many(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100,000 jobs would have been 100,000 links in the sidebar; a job's runs stay a click away."""
    from scheduling.admin.history import JobFilter
    from scheduling.models import ScheduledJob

    monkeypatch.setattr(JobFilter, "LISTED", 3)
    ScheduledJob.objects.bulk_create(ScheduledJob(id=f"job-{n}", name=f"Job {n}") for n in range(3))
    Execution.objects.bulk_create(
        Execution(job_id=f"job-{n}", status="succeeded", scheduled_at=timezone.now()) for n in range(4)
    )
    assert "Job 2" in admin_client.get("/admin/scheduling/execution/").text

    ScheduledJob.objects.create(id="job-3", name="Job 3")
    page = admin_client.get("/admin/scheduling/execution/").text
    chosen = admin_client.get("/admin/scheduling/execution/?job=job-3").text

    assert "Job 2" not in page
    assert "?job=job-3" in chosen
    assert "1 execution" in chosen


def test_django_apscheduler_admin_pages_that_ran_jobs_in_the_request_are_gone(admin_client: Client) -> None:
    assert admin_client.get("/admin/django_apscheduler/djangojob/").status_code == 404


def form_data(**changes: object) -> dict:
    data = {
        "kind": "interval",
        "cron": "",
        "every": "1",
        "unit": "minutes",
        "run_at_0": "",
        "run_at_1": "",
        "time_zone": "",
        "jitter": "",
        "max_instances": "1",
        "coalesce": "on",
        "misfire_grace_time": "60",
        "runs_in": "threads",
        "task_backend": "",
        "task_queue": "",
        "_save": "Save",
    }
    data.update({key: str(value) for key, value in changes.items()})
    return data


def stored_trigger(job_id: str = "job-0") -> str:
    return str(JobStore().lookup_job(job_id).trigger)


def test_the_change_form_shows_the_current_schedule_and_the_next_five_runs(
    admin_client: Client, registry: dict
) -> None:
    declare_jobs(registry, 1)

    page = admin_client.get(JOBS + "job-0/change/").text

    assert 'name="every" value="1"' in page
    assert '<option value="minutes" selected>' in page
    assert "Next 5 runs" in page
    assert page.count("<small>(in ") == 5


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "invalid cron expression &#x27;61 * * * *&#x27;"),
        ({"kind": "cron", "cron": "0 0 30 2 *"}, "this cron schedule never fires"),
        ({"kind": "cron", "cron": ""}, "Enter a cron expression."),
        ({"kind": "interval", "every": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"kind": "date", "run_at_0": "2020-01-01", "run_at_1": "10:00:00"}, "must be in the future"),
        (
            {"kind": "cron", "cron": "0 3 * * *", "time_zone": "Mars/Olympus"},
            "unknown timezone &#x27;Mars/Olympus&#x27;",
        ),
        ({"max_instances": "0"}, "max_instances must be a whole number from 1 to 1000, not 0"),
        # The security review's inputs: each stopped scheduling or a listing once stored.
        (
            {"misfire_grace_time": "100000000000000"},
            "misfire_grace_time must be a whole number of seconds from 1 to 2678400 (31 days), or none",
        ),
        ({"jitter": str(10**15)}, "jitter must be a whole number of seconds from 0 to 86400 (1 day)"),
        ({"every": str(10**15), "unit": "days"}, "interval.days must be from 1 second to 315532800 seconds"),
        (
            {"kind": "cron", "cron": ",".join(["1"] * 150_000) + " * * * *"},
            "cron must be text of at most 256",
        ),
        (
            {"kind": "cron", "cron": "0 3 * * *", "time_zone": "A" * 100},
            "timezone must be text of at most 64",
        ),
    ],
)
def test_bad_schedules_are_refused_next_to_the_field_and_nothing_is_saved(
    admin_client: Client, registry: dict, changes: dict, error: str
) -> None:
    declare_jobs(registry, 1)
    before = stored_trigger()

    response = admin_client.post(JOBS + "job-0/change/", form_data(**changes))

    assert response.status_code == 200
    assert error in response.text
    assert stored_trigger() == before
    assert not LogEntry.objects.exists()


def test_a_valid_schedule_is_saved_flagged_as_overridden_and_audited(
    admin_client: Client, registry: dict
) -> None:
    declare_jobs(registry, 1)

    response = admin_client.post(
        JOBS + "job-0/change/", form_data(kind="cron", cron="*/5 * * * 1-5", max_instances=3)
    )

    assert response.status_code == 302
    job = JobStore().lookup_job("job-0")
    assert (
        str(job.trigger)
        == "cron[month='*', day='*', day_of_week='mon,tue,wed,thu,fri', hour='*', minute='*/5']"
    )
    assert job.max_instances == 3
    assert job.next_run_time is not None
    assert "overridden outside the code" in admin_client.get(JOBS).text
    assert LogEntry.objects.get(object_id="job-0").get_change_message() == (
        "Changed the schedule from “Every minute; max instances 1, coalesce on, misfire grace 60 s” "
        "to “Every 5 minutes, Monday through Friday; max instances 3, coalesce on, misfire grace 60 s”"
    )


def test_a_job_can_be_moved_to_task_workers_and_back_to_threads(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)

    response = admin_client.post(JOBS + "job-0/change/", form_data(runs_in="tasks", task_queue="reports"))

    assert response.status_code == 302
    assert JobStore().lookup_job("job-0").executor == "tasks:default:reports"
    assert (
        "runs in task workers (backend &#x27;default&#x27;, queue &#x27;reports&#x27;)"
        in admin_client.get(JOBS).text
    )
    assert (
        LogEntry.objects.get(object_id="job-0")
        .get_change_message()
        .endswith("misfire grace 60 s, runs in task workers (backend 'default', queue 'reports')”")
    )
    page = admin_client.get(JOBS + "job-0/change/").text
    assert '<option value="tasks" selected>' in page
    assert 'name="task_queue" value="reports"' in page

    admin_client.post(JOBS + "job-0/change/", form_data(runs_in="threads", task_queue="reports"))

    assert JobStore().lookup_job("job-0").executor == "default"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"runs_in": "tasks", "task_backend": "redis"},
            "task_backend &#x27;redis&#x27; is not configured in TASKS",
        ),
        ({"runs_in": "tasks", "task_queue": "nightly"}, "task_queue &#x27;nightly&#x27; cannot be used"),
        ({"runs_in": "cluster"}, "Select a valid choice. cluster is not one of the available choices."),
    ],
)
def test_a_placement_that_cannot_work_is_refused_next_to_the_field(
    admin_client: Client, registry: dict, changes: dict, error: str
) -> None:
    declare_jobs(registry, 1)

    response = admin_client.post(JOBS + "job-0/change/", form_data(**changes))

    assert response.status_code == 200
    assert error in response.text
    assert JobStore().lookup_job("job-0").executor == "default"


def test_a_one_off_date_can_be_set(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 1)
    when = timezone.localtime() + timedelta(days=2)

    admin_client.post(
        JOBS + "job-0/change/",
        form_data(kind="date", run_at_0=when.strftime("%Y-%m-%d"), run_at_1=when.strftime("%H:%M:%S")),
    )

    assert JobStore().lookup_job("job-0").next_run_time == when.replace(microsecond=0)


def test_a_job_declared_with_a_date_without_offset_opens_at_its_time_in_local_time(
    admin_client: Client, registry: dict
) -> None:
    job(date="2031-06-01T09:30:00", timezone="Asia/Tokyo", id="tokyo.once")(jobs.succeed)
    sync(JobStore(), registry.values())

    response = admin_client.get(JOBS + "tokyo.once/change/")

    assert response.status_code == 200
    local = timezone.localtime(JobStore().lookup_job("tokyo.once").next_run_time)
    assert local.strftime("%H:%M:%S") in response.text  # 09:30 in Tokyo, in the site's time zone


def test_users_who_may_not_change_schedules_see_them_read_only(registry: dict) -> None:
    declare_jobs(registry, 1)
    viewer = staff("view_job", "run_job")

    page = viewer.get(JOBS + "job-0/change/").text

    assert 'name="cron"' not in page
    assert "Every minute" in page
    assert viewer.post(JOBS + "job-0/change/", form_data(every=5)).status_code == 403


@pytest.fixture
def schedulables(monkeypatch: pytest.MonkeyPatch) -> dict:
    fresh: dict = {}
    monkeypatch.setattr(declarations, "schedulables", fresh)
    schedulable(jobs.sleep)
    schedulable(name="Say hello")(jobs.succeed)
    return fresh


def add_data(**changes: object) -> dict:
    data = form_data(
        function="tests.support.jobs:sleep", job_id="nap", job_name="Nap", args="[0.1]", kwargs="{}"
    )
    data.update({key: str(value) for key, value in changes.items()})
    return data


def test_a_job_can_be_added_from_a_function_the_code_declares_schedulable(
    admin_client: Client, registry: dict, schedulables: dict
) -> None:
    page = admin_client.get(JOBS + "add/").text
    assert '<option value="tests.support.jobs:sleep">sleep (tests.support.jobs:sleep)</option>' in page
    assert "Say hello (tests.support.jobs:succeed)" in page

    response = admin_client.post(JOBS + "add/", add_data(every=10, unit="seconds"))

    assert response.status_code == 302
    job = JobStore().lookup_job("nap")
    assert (job.func_ref, job.args, job.name) == ("tests.support.jobs:sleep", (0.1,), "Nap")
    assert job.trigger.interval == timedelta(seconds=10)
    assert "added outside the code" in admin_client.get(JOBS).text
    assert LogEntry.objects.get(object_id="nap").is_addition()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"function": "os:system"}, "Select a valid choice."),
        ({"args": "[]"}, "missing a required argument: &#x27;seconds&#x27;"),
        ({"args": "[1, 2]"}, "too many positional arguments"),
        ({"args": "{}"}, "Enter a JSON list."),
        ({"args": "[1"}, "Enter a valid JSON."),
        ({"job_id": "job-0"}, "A job with this id exists already."),
        ({"kind": "cron", "cron": "61 * * * *"}, "invalid cron expression"),
        ({"args": "[" * 50_000 + "]" * 50_000}, "The JSON is 100000 bytes long; the limit is 65536"),
        ({"args": "[" * 10_000 + "]" * 10_000}, "The JSON is nested more than 32 levels deep"),
        ({"kwargs": '{"a": ' * 5_000 + "1" + "}" * 5_000}, "The JSON is nested more than 32 levels deep"),
        ({"args": "[" + "9" * 5000 + "]"}, "An integer of 5000 digits is too long; the limit is 20"),
        ({"args": "[NaN]"}, "NaN is not a JSON number"),
        ({"job_id": "x" * 300}, "Ensure this value has at most 255 characters"),
        ({"job_id": "two\nlines"}, "job_id must not contain a control character (it has &#x27;\\n&#x27;)"),
        ({"misfire_grace_time": "100000000000000"}, "misfire_grace_time must be a whole number of seconds"),
    ],
)
def test_a_bad_new_job_is_refused_and_nothing_is_stored(
    admin_client: Client, registry: dict, schedulables: dict, changes: dict, error: str
) -> None:
    declare_jobs(registry, 1)

    response = admin_client.post(JOBS + "add/", add_data(**changes))

    assert response.status_code == 200
    assert error in response.text
    assert not DjangoJob.objects.filter(id="nap").exists()


def test_adding_needs_the_add_permission(registry: dict, schedulables: dict) -> None:
    viewer = staff("view_job", "change_schedule")

    assert viewer.get(JOBS + "add/").status_code == 403


def test_the_execution_page_shows_everything_read_only_with_the_full_traceback(admin_client: Client) -> None:
    traceback = "Traceback (most recent call last):\n" + "".join(
        f'  File "x.py", line {n}\n' for n in range(200)
    )
    execution = Execution.objects.create(
        job_id="a",
        status="failed",
        scheduled_at=timezone.now(),
        exception="ValueError: <bad>",
        traceback=traceback,
    )

    page = admin_client.get(f"/admin/scheduling/execution/{execution.pk}/change/").text

    assert "line 199" in page
    assert "<pre" in page
    assert "ValueError: &lt;bad&gt;" in page
    assert 'name="job_id"' not in page
    assert 'name="_save"' not in page


def test_executions_say_where_they_ran_and_which_task_ran_them(admin_client: Client) -> None:
    now = timezone.now()
    in_worker = Execution.objects.create(
        job_id="a",
        status="succeeded",
        ran_in="tasks",
        task_id="5f0c-task",
        hostname="worker-7",
        pid=99,
        scheduled_at=now,
    )
    Execution.objects.create(
        job_id="a", status="enqueued", ran_in="tasks", scheduled_at=now - timedelta(seconds=1)
    )
    Execution.objects.create(
        job_id="b", status="succeeded", ran_in="processes", hostname="sched-1", scheduled_at=now
    )

    listing = admin_client.get("/admin/scheduling/execution/").text
    by_task = admin_client.get("/admin/scheduling/execution/", {"q": "5f0c-task"}).text
    page = admin_client.get(f"/admin/scheduling/execution/{in_worker.pk}/change/").text

    assert "Task worker on worker-7" in listing
    assert "Scheduler process pool on sched-1" in listing
    assert "Enqueued for a task worker" in listing
    assert by_task.count("Task worker on worker-7") == 1
    assert "5f0c-task" in page
    assert "Where it ran" in page


def test_the_executions_list_filters_by_job_and_status(admin_client: Client, registry: dict) -> None:
    declare_jobs(registry, 2)
    now = timezone.now()
    Execution.objects.create(job_id="job-0", status="failed", scheduled_at=now)
    Execution.objects.create(job_id="job-1", status="succeeded", scheduled_at=now)

    page = admin_client.get("/admin/scheduling/execution/?job=job-0").text

    assert ">job-0<" in page
    assert ">job-1<" not in page
    assert "Job 1" in page  # offered as a filter choice
    assert ">job-1<" in admin_client.get("/admin/scheduling/execution/?status__exact=succeeded").text


def test_the_job_page_charts_recent_durations_coloured_by_outcome(
    admin_client: Client, registry: dict
) -> None:
    declare_jobs(registry, 1)
    now = timezone.now()
    Execution.objects.create(job_id="job-0", status="succeeded", scheduled_at=now, duration=2.0)
    Execution.objects.create(
        job_id="job-0", status="failed", scheduled_at=now - timedelta(minutes=1), duration=1.0
    )

    page = admin_client.get(JOBS + "job-0/change/").text

    assert page.count("<rect ") == 2
    assert 'height="80.0" fill="#1a7f37"' in page  # the longest run, a success, is full height
    assert 'height="40.0" fill="#cf222e"' in page


def old_history(job_id: str, count: int = 2) -> list[tuple]:
    """Rows of django-apscheduler's own history table for a job, as a site migrating to us has them."""
    for minutes in range(count):
        DjangoJobExecution.objects.create(
            job_id=job_id, status="Executed", run_time=timezone.now() - timedelta(minutes=minutes + 1)
        )
    return list(DjangoJobExecution.objects.order_by("pk").values_list())


def test_delete_refuses_a_job_django_apschedulers_history_refers_to_and_leaves_that_table_alone(
    admin_client: Client, registry: dict, django_assert_max_num_queries
) -> None:
    declare_jobs(registry, 2)
    before = old_history("job-0")
    selected = {"action": "delete_selected", "_selected_action": ["job-0", "job-1"]}

    with django_assert_max_num_queries(12):
        confirm = admin_client.post(JOBS, selected)
    assert "protected related objects" in confirm.text
    assert (
        "job-0: 2 runs in django-apscheduler&#x27;s history table (DjangoJobExecution), which deleting the "
        "job would delete" in confirm.text
    )
    assert 'name="post"' not in confirm.text
    admin_client.post(JOBS, {**selected, "post": "yes"})  # sent without the confirmation page
    single = admin_client.post(f"{JOBS}job-0/delete/", {"post": "yes"})

    assert "protected related objects" in single.text
    assert set(DjangoJob.objects.values_list("id", flat=True)) == {"job-0", "job-1"}
    assert list(DjangoJobExecution.objects.order_by("pk").values_list()) == before
    assert not LogEntry.objects.exists()


def test_delete_asks_for_confirmation_removes_the_job_and_keeps_its_history(
    admin_client: Client, registry: dict
) -> None:
    declare_jobs(registry, 1)
    Execution.objects.create(job_id="job-0", status="succeeded", scheduled_at=timezone.now())

    confirm = admin_client.post(JOBS, {"action": "delete_selected", "_selected_action": ["job-0"]})
    assert "<title>Delete multiple objects" in confirm.text
    assert 'name="post"' in confirm.text
    assert DjangoJob.objects.filter(id="job-0").exists()

    admin_client.post(JOBS, {"action": "delete_selected", "_selected_action": ["job-0"], "post": "yes"})

    assert not DjangoJob.objects.filter(id="job-0").exists()
    assert Execution.objects.filter(job_id="job-0").count() == 1
    assert LogEntry.objects.get(object_id="job-0").is_deletion()


@pytest.mark.django_db
def test_an_execution_page_shows_how_a_run_recorded_interrupted_ended(admin_client: Client) -> None:
    row = Execution.objects.create(
        job_id="late",
        status="interrupted",
        scheduled_at=timezone.now(),
        exception="Interrupted: the scheduler running it stopped without finishing it",
        late_outcome={"status": "succeeded", "finished_at": "2026-12-01T10:00:03+00:00", "duration": 3.25},
    )

    page = admin_client.get(f"/admin/scheduling/execution/{row.pk}/change/").text

    assert "After it was recorded interrupted" in page
    assert "succeeded at 2026-12-01T10:00:03+00:00, 3.250 s" in page


@pytest.mark.parametrize(
    ("language", "paused", "resumed", "reset"),
    [
        (
            "ja",
            "1 件のジョブを一時停止しました。",
            "1 件のジョブを再開しました。",
            "1 件のジョブを宣言に戻しました。",
        ),
        ("zh-hans", "已暂停 1 个任务。", "已恢复 1 个任务。", "已将 1 个任务重置为其声明。"),
    ],
)
def test_the_actions_report_in_the_requested_language(
    admin_client: Client, registry: dict, language: str, paused: str, resumed: str, reset: str
) -> None:
    declare_jobs(registry, 1)
    # LocaleMiddleware leaves the request's language on in this thread: the override restores it.
    with translation.override(translation.get_language()):
        for action, said in (("pause", paused), ("resume", resumed), ("reset_schedule", reset)):
            response = admin_client.post(
                JOBS,
                {"action": action, "_selected_action": ["job-0"]},
                headers={"accept-language": language},
                follow=True,
            )
            assert said in response.text, action


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_a_page_of_the_jobs_list_is_read_in_order_from_an_index_not_sorted(
    admin_user: User, registry: dict, vendor: str
) -> None:
    """With 100,000 jobs, sorting the store for each page took most of the page's time."""
    from django.contrib import admin
    from django.db import connection
    from django.test import RequestFactory

    from scheduling.models import Job

    if connection.vendor != vendor:
        pytest.skip(f"the plan is read as {vendor} words it")
    declare_jobs(registry, 20)
    model_admin = admin.site._registry[Job]
    request = RequestFactory().get(JOBS)
    request.user = admin_user
    page = model_admin.get_queryset(request).order_by(*model_admin.get_ordering(request))[:10]
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole
        plan = page.explain()
        assert "Sort" not in plan, plan
    else:
        plan = page.explain()
        assert "TEMP B-TREE" not in plan, plan  # "... FOR [RIGHT PART OF] ORDER BY": a sort
