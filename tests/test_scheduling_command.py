"""manage.py scheduling: the operator's command line."""

from __future__ import annotations

import getpass
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduling import control, job
from scheduling.models import ApiToken, Execution, RunRequest, SchedulerInstance
from scheduling.queries import job_summaries
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def declared(registry: dict) -> None:
    job(cron="0 3 * * *", id="nightly", name="Nightly report")(jobs.succeed)
    job(interval={"minutes": 5}, id="often")(jobs.succeed)
    sync(JobStore(), registry.values())


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("scheduling", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_list_shows_schedules_in_words_as_text_and_json(declared: None) -> None:
    text, _ = run("list")
    assert "At 03:00, every day" in text
    assert "Every 5 minutes" in text

    data = json.loads(run("list", "--json")[0])["jobs"]
    assert {row["id"]: row["schedule"] for row in data} == {
        "nightly": "At 03:00, every day",
        "often": "Every 5 minutes",
    }
    assert data[0]["next_run"] is not None


def test_show_gives_one_job_and_its_recent_runs(declared: None) -> None:
    Execution.objects.create(
        job_id="nightly", status="failed", scheduled_at=timezone.now(), exception="ValueError: x"
    )

    data = json.loads(run("show", "nightly", "--json")[0])

    assert data["name"] == "Nightly report"
    assert data["function"] == "tests.support.jobs:succeed"
    assert [(r["status"], r["exception"]) for r in data["runs"]] == [("failed", "ValueError: x")]
    assert "ValueError: x" in run("show", "nightly")[0]


def test_unknown_job_ids_are_refused_and_nothing_changes(declared: None) -> None:
    with pytest.raises(CommandError, match="No stored job with id 'nope'"):
        run("show", "nope")
    with pytest.raises(CommandError, match="No stored job with id 'nope'; nothing was changed"):
        run("pause", "nightly", "nope")
    assert DjangoJob.objects.get(id="nightly").next_run_time is not None


def test_run_asks_the_scheduler_and_warns_when_none_is_running(declared: None) -> None:
    out, err = run("run", "nightly", "often")

    assert sorted(RunRequest.objects.values_list("job_id", flat=True)) == ["nightly", "often"]
    assert set(RunRequest.objects.values_list("requested_by", flat=True)) == {f"cli:{getpass.getuser()}"}
    assert "run requested" in out
    assert "No scheduler is running" in err


def test_pause_and_resume(declared: None) -> None:
    run("pause", "nightly")
    assert DjangoJob.objects.get(id="nightly").next_run_time is None
    assert json.loads(run("resume", "nightly", "--json")[0]) == {"jobs": ["nightly"], "result": "resumed"}
    assert DjangoJob.objects.get(id="nightly").next_run_time is not None


def test_status_exits_1_without_an_active_scheduler(declared: None) -> None:
    with pytest.raises(SystemExit) as exit_code:
        run("status")
    assert exit_code.value.code == 1

    SchedulerInstance.objects.create(hostname="worker", pid=7, role="active")
    data = json.loads(run("status", "--json")[0])
    assert (data["alive"], data["host"], data["jobs"]["scheduled"]) == (True, "worker", 2)


def test_prune_deletes_old_history() -> None:
    Execution.objects.create(job_id="a", status="succeeded", scheduled_at=timezone.now() - timedelta(days=10))
    Execution.objects.create(job_id="a", status="succeeded", scheduled_at=timezone.now())

    assert "Deleted 1 execution(s)." in run("prune", "--older-than-days", "7")[0]
    assert Execution.objects.count() == 1


def test_token_create_list_and_revoke(client) -> None:
    User.objects.create_user("deployer")
    created = json.loads(run("token", "create", "deployer", "--name", "deploy script", "--json")[0])
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/scheduling/api/jobs/", headers=headers).status_code == 403  # no view_job yet

    listed = json.loads(run("token", "list", "--json")[0])
    assert [(row["name"], row["user"]) for row in listed] == [("deploy script", "deployer")]
    assert created["key"].startswith(listed[0]["prefix"])
    assert created["key"] not in run("token", "list")[0]

    assert "Revoked" in run("token", "revoke", listed[0]["prefix"])[0]
    assert client.get("/scheduling/api/jobs/", headers=headers).status_code == 401


def test_token_errors_name_the_problem() -> None:
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("token", "create", "ghost", "--name", "x")
    with pytest.raises(CommandError, match="must be the start of exactly one token's key"):
        run("token", "revoke", "sch_")


@pytest.mark.parametrize(
    ("active", "name", "message"),
    [
        (False, "deploy script", "User retired is inactive: a token for them would be refused"),
        (True, "x" * 101, "A token's name is at most 100 characters, not 101"),
        (True, "  ", "A token needs a name"),
    ],
)
def test_token_create_refuses_inactive_users_and_names_that_do_not_fit(
    active: bool, name: str, message: str
) -> None:
    User.objects.create_user("retired", is_active=active)

    with pytest.raises(CommandError, match=message) as refused:
        run("token", "create", "retired", "--name", name)

    assert refused.value.returncode == 1
    assert not ApiToken.objects.exists()


def test_summaries_can_be_limited_to_the_jobs_due_soonest(registry: dict) -> None:
    job(interval={"minutes": 1}, id="soon")(jobs.succeed)
    job(interval={"hours": 1}, id="later")(jobs.succeed)
    job(interval={"days": 1}, id="latest")(jobs.succeed)
    sync(JobStore(), registry.values())
    control.pause("soon")

    assert [summary.id for summary in job_summaries(limit=2)] == ["later", "latest"]
    assert [summary.id for summary in job_summaries(limit=3)] == ["later", "latest", "soon"]
