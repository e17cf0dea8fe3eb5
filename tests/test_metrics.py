"""Prometheus metrics: read from the database at each scrape, by whom SCHEDULING_METRICS_ACCESS names.

Every scrape here is parsed with prometheus_client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import io
import json
import re
import sys
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import scheduling
from scheduling import checks, control, job, metrics, tokens
from scheduling.history.alerts import raise_alert
from scheduling.management.commands import runscheduler
from scheduling.models import Alert, AlertDelivery, Execution, SchedulerInstance
from scheduling.policy import AlertPolicy
from scheduling.runs.targets import run_targets
from scheduling.runs.threads import ThreadTarget
from scheduling.runtime.dispatch import Dispatcher
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.conftest import ROOT, wait_for
from tests.support import jobs

URL = "/scheduling/metrics/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

pytestmark = pytest.mark.django_db


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: found for (sample, labels), found in samples.items() if sample == name}


def user_with(*permissions: str, username: str = "prometheus", **fields: Any) -> User:
    user = User.objects.create_user(username, password="pw", **fields)
    for codename in permissions:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="scheduling")
        )
    return user


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(user, 'prometheus')[1]}"}


@pytest.fixture
def token_access(settings: Any) -> dict[str, str]:
    settings.SCHEDULING_METRICS_ACCESS = "token"
    return bearer(user_with("view_job"))


def scrape(client: Client, headers: dict[str, str]) -> Samples:
    response = client.get(URL, headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


@pytest.fixture
def declared(registry: dict) -> JobStore:
    job(interval={"minutes": 5}, id="ok")(jobs.succeed)
    job(interval={"minutes": 5}, id="flaky")(jobs.fail)
    job(interval={"minutes": 5}, id="paused")(jobs.succeed)
    job(cron="0 3 * * *", id="report", runs_in="processes")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    control.pause("paused")
    return store


def run(job_id: str, status: str, ago: float, **fields: Any) -> Execution:
    """A history row whose fire was ``ago`` seconds before now."""
    scheduled = timezone.now() - timedelta(seconds=ago)
    defaults: dict[str, Any] = {"started_at": scheduled, "finished_at": scheduled + timedelta(seconds=1)}
    return Execution.objects.create(
        job_id=job_id, status=status, scheduled_at=scheduled, **{**defaults, **fields}
    )


def without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail as if the package were not installed; our module
    # must be imported afresh to meet that.
    for name in [name for name in sys.modules if name.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "scheduling.metrics")
    monkeypatch.delattr(scheduling, "metrics")


# Who may read them


def test_the_metrics_are_off_until_a_reader_is_named(client: Client) -> None:
    assert client.get(URL).status_code == 404


def test_a_token_of_a_user_who_may_view_jobs_reads_them(client: Client, token_access: dict) -> None:
    samples = scrape(client, token_access)

    assert value(samples, "scheduling_maintenance") == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sch_not-a-key"}, {"Authorization": "Basic cHJvbTpwdw=="}],
    ids=["none", "unknown token", "another scheme"],
)
def test_without_a_valid_token_the_answer_is_401_and_says_nothing_more(
    client: Client, settings: Any, headers: dict[str, str]
) -> None:
    settings.SCHEDULING_METRICS_ACCESS = "token"

    response = client.get(URL, headers=headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="scheduling"'
    assert response.content == b"Authentication required\n"


def test_a_token_of_a_user_without_view_job_is_refused(client: Client, settings: Any) -> None:
    settings.SCHEDULING_METRICS_ACCESS = "token"

    response = client.get(URL, headers=bearer(user_with()))

    assert response.status_code == 403
    assert response.content == b"Forbidden\n"


def test_staff_access_wants_a_staff_user(client: Client, settings: Any) -> None:
    settings.SCHEDULING_METRICS_ACCESS = "staff"
    assert client.get(URL).status_code == 401

    client.force_login(user_with("view_job", username="not-staff"))
    assert client.get(URL).status_code == 403

    client.force_login(user_with(username="staff", is_staff=True))
    assert client.get(URL).status_code == 200


@pytest.mark.parametrize(
    ("address", "status"),
    [("10.1.2.3", 200), ("::ffff:10.1.2.3", 200), ("2001:db8::7", 200), ("192.168.1.1", 403), ("", 403)],
)
def test_an_allow_list_of_addresses_and_networks(
    client: Client, settings: Any, address: str, status: int
) -> None:
    settings.SCHEDULING_METRICS_ACCESS = ["10.0.0.0/8", "2001:db8::/32"]

    response = client.get(URL, REMOTE_ADDR=address)

    assert response.status_code == status
    if status == 403:
        assert response.content == b"Forbidden\n"


def test_an_unreadable_access_setting_is_an_error_and_a_missing_client_a_warning() -> None:
    assert [message.id for message in checks.metrics_messages("tokens", True)] == ["scheduling.E005"]
    assert [message.id for message in checks.metrics_messages(["10.0.0.0/33"], True)] == ["scheduling.E005"]
    assert [message.id for message in checks.metrics_messages([], True)] == ["scheduling.E005"]
    assert [message.id for message in checks.metrics_messages("token", False)] == ["scheduling.W006"]
    assert checks.metrics_messages(None, False) == []
    assert checks.metrics_messages(["127.0.0.1", "::1"], True) == []


def test_without_prometheus_client_the_endpoint_says_what_to_install(
    client: Client, token_access: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_prometheus_client(monkeypatch)

    response = client.get(URL, headers=token_access)

    assert response.status_code == 501
    assert b"pip install 'django-scheduling[metrics]'" in response.content


def test_without_prometheus_client_the_metrics_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    without_prometheus_client(monkeypatch)
    # Refused before a scheduler starts: were it not, the test would fail rather than run one.
    monkeypatch.setattr(runscheduler, "Runner", None)

    with pytest.raises(CommandError, match=r"--metrics-port needs prometheus-client"):
        call_command("runscheduler", "--metrics-port", "0", stdout=io.StringIO())


def test_a_database_error_is_a_503_without_its_text(
    client: Client, token_access: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> None:
        raise DatabaseError("could not connect to db.internal as admin")

    monkeypatch.setattr(metrics, "scheduler_status", unreachable)

    response = client.get(URL, headers=token_access)

    assert response.status_code == 503
    assert b"db.internal" not in response.content


# What they say


def test_jobs_by_state_schedulers_and_maintenance(
    client: Client, token_access: dict, declared: JobStore
) -> None:
    SchedulerInstance.objects.create(hostname="a", pid=1, role=SchedulerInstance.Role.ACTIVE)
    SchedulerInstance.objects.create(hostname="b", pid=2)
    control.start_maintenance("database upgrade")

    samples = scrape(client, token_access)

    assert named(samples, "scheduling_jobs") == {
        frozenset({("state", "scheduled")}): 3,
        frozenset({("state", "paused")}): 1,
        frozenset({("state", "broken")}): 0,
    }
    assert value(samples, "scheduling_schedulers", role="leader") == 1
    assert value(samples, "scheduling_schedulers", role="standby") == 1
    assert value(samples, "scheduling_maintenance") == 1


def test_next_fire_delay_last_run_and_last_success_per_job(
    client: Client, token_access: dict, declared: JobStore
) -> None:
    success = run("ok", "succeeded", ago=600)
    run("ok", "missed", ago=300)
    run("flaky", "succeeded", ago=900)
    run("flaky", "failed", ago=60)
    run("flaky", "running", ago=1, finished_at=None)  # not ended: the failure is still the latest

    samples = scrape(client, token_access)

    delays = named(samples, "scheduling_job_next_fire_delay_seconds")
    assert set(delays) == {frozenset({("job_id", job_id)}) for job_id in ("ok", "flaky", "report")}
    assert 0 < delays[frozenset({("job_id", "ok")})] <= 300
    assert set(named(samples, "scheduling_job_last_run_timestamp_seconds")) == {
        frozenset({("job_id", "ok"), ("status", "missed")}),
        frozenset({("job_id", "flaky"), ("status", "failed")}),
    }
    assert success.finished_at is not None
    assert value(samples, "scheduling_job_last_success_timestamp_seconds", job_id="ok") == pytest.approx(
        success.finished_at.timestamp()
    )
    assert value(samples, "scheduling_job_last_success_timestamp_seconds", job_id="report") is None


def test_an_overdue_job_has_a_negative_delay(client: Client, token_access: dict, declared: JobStore) -> None:
    stored = declared.lookup_job("ok")
    declared.update_jobs([stored])  # same state, then moved into the past through the store
    stored.next_run_time = timezone.now() - timedelta(minutes=10)
    declared.update_jobs([stored])

    samples = scrape(client, token_access)

    assert value(samples, "scheduling_job_next_fire_delay_seconds", job_id="ok") == pytest.approx(
        -600, abs=30
    )


def test_runs_and_histograms_over_the_window(
    client: Client, token_access: dict, declared: JobStore, settings: Any
) -> None:
    settings.SCHEDULING_METRICS_WINDOW = timedelta(minutes=30)
    run("ok", "succeeded", ago=60, duration=0.03, started_at=timezone.now() - timedelta(seconds=59.98))
    run("ok", "succeeded", ago=120, duration=2.0, started_at=timezone.now() - timedelta(seconds=117))
    run("ok", "failed", ago=180, duration=40.0, started_at=timezone.now() - timedelta(seconds=179.7))
    run("ok", "succeeded", ago=3600, duration=7.0)  # before the window
    run("ok", "missed", ago=240, started_at=None)
    run("flaky", "failed", ago=60, duration=0.2, attempt=2)  # a retry: late by design
    run("report", "succeeded", ago=30, duration=1.0, ran_in="processes", origin="manual")

    samples = scrape(client, token_access)

    assert value(samples, "scheduling_window_seconds") == 1800
    assert named(samples, "scheduling_window_runs") == {
        frozenset({("job_id", "ok"), ("status", "succeeded")}): 2,
        frozenset({("job_id", "ok"), ("status", "failed")}): 1,
        frozenset({("job_id", "ok"), ("status", "missed")}): 1,
        frozenset({("job_id", "flaky"), ("status", "failed")}): 1,
        frozenset({("job_id", "report"), ("status", "succeeded")}): 1,
    }
    name = "scheduling_window_run_duration_seconds"
    assert value(samples, f"{name}_bucket", job_id="ok", le="0.05") == 1
    assert value(samples, f"{name}_bucket", job_id="ok", le="5.0") == 2
    assert value(samples, f"{name}_bucket", job_id="ok", le="30.0") == 2
    assert value(samples, f"{name}_bucket", job_id="ok", le="+Inf") == 3
    assert value(samples, f"{name}_gcount", job_id="ok") == 3
    assert value(samples, f"{name}_gsum", job_id="ok") == pytest.approx(42.03)
    assert value(samples, f"{name}_gcount", job_id="flaky") == 1
    # Lateness: scheduled first attempts only (not the retry, not the manual run); by placement.
    name = "scheduling_window_run_lateness_seconds"
    assert value(samples, f"{name}_bucket", runs_in="threads", le="0.025") == 1
    assert value(samples, f"{name}_bucket", runs_in="threads", le="0.5") == 2
    assert value(samples, f"{name}_bucket", runs_in="threads", le="+Inf") == 3
    assert value(samples, f"{name}_gsum", runs_in="threads") == pytest.approx(3.32, abs=0.01)
    assert value(samples, f"{name}_gcount", runs_in="processes") is None


def test_unfinished_runs_by_status_whatever_their_age(
    client: Client, token_access: dict, declared: JobStore
) -> None:
    run("ok", "running", ago=86400, finished_at=None)
    run("flaky", "enqueued", ago=5, started_at=None, finished_at=None, ran_in="tasks")

    samples = scrape(client, token_access)

    assert named(samples, "scheduling_unfinished_runs") == {
        frozenset({("status", "queued")}): 0,
        frozenset({("status", "enqueued")}): 1,
        frozenset({("status", "running")}): 1,
        frozenset({("status", "overrunning")}): 0,
    }


def test_alert_deliveries_in_the_window_by_status(client: Client, token_access: dict) -> None:
    policy = AlertPolicy(to=("log", "ops@example.com"))
    raise_alert("flaky", Alert.Rule.FAILURE, "failure:1", "boom", policy, 1)
    raise_alert("flaky", Alert.Rule.FAILURE, "failure:2", "boom", policy, 2)  # rate-limited
    AlertDelivery.objects.filter(destination="log", status="pending").update(status="sent")
    old = raise_alert("other", Alert.Rule.MISSED, "missed:3", "late", policy, 3)
    assert old is not None
    Alert.objects.filter(pk=old.pk).update(raised_at=timezone.now() - timedelta(hours=2))

    samples = scrape(client, token_access)

    assert named(samples, "scheduling_window_alert_deliveries") == {
        frozenset({("status", "pending")}): 1,
        frozenset({("status", "sent")}): 1,
        frozenset({("status", "failed")}): 0,
        frozenset({("status", "suppressed")}): 2,
    }


def test_openmetrics_is_served_to_who_asks_for_it(
    client: Client, token_access: dict, declared: JobStore
) -> None:
    run("ok", "succeeded", ago=60, duration=0.5)

    response = client.get(
        URL, headers={**token_access, "Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response["Content-Type"].startswith("application/openmetrics-text")
    types = {family.name: family.type for family in openmetrics_families(response.content.decode())}
    assert types["scheduling_window_run_duration_seconds"] == "gaugehistogram"
    assert types["scheduling_jobs"] == "gauge"


# What they cost


def test_a_scrape_takes_the_same_few_queries_however_many_jobs_and_runs(
    registry: dict, django_assert_max_num_queries: Any
) -> None:
    for number in range(50):
        job(interval={"minutes": 5}, id=f"job-{number}")(jobs.succeed)
    sync(JobStore(), registry.values())
    for number in range(50):
        for ago in (30, 90, 150):
            run(f"job-{number}", "succeeded", ago=ago, duration=0.1)

    with django_assert_max_num_queries(metrics.QUERIES):
        families = list(metrics.DatabaseCollector().collect())

    runs = next(family for family in families if family.name == "scheduling_window_runs")
    assert sum(sample.value for sample in runs.samples) == 150


@pytest.mark.django_db(transaction=True)
def test_a_fire_costs_no_statement_more_with_the_metrics_on(
    registry: dict, settings: Any, executor: ThreadTarget
) -> None:
    # The metrics are read at scrape time; nothing in the dispatch path counts anything.
    settings.SCHEDULING_METRICS_ACCESS = "token"
    metrics.registry()
    job(interval={"seconds": 30}, id="due")(jobs.succeed)
    store = JobStore()
    sync(store, registry.values())
    due = store.lookup_job("due")
    due.next_run_time -= timedelta(seconds=31)
    store.update_jobs([due])
    dispatcher = Dispatcher(store, executor.recorder, run_targets(executor))
    now = timezone.now()

    with CaptureQueriesContext(connection) as queries:
        found, _ = store.get_due_jobs_and_next_run_time(now, limit=10)
        dispatcher.dispatch(found, now)

    assert len(queries.captured_queries) == 3  # SELECT, INSERT, UPDATE; the outcome's UPDATE follows
    assert executor.wait(10)


# From other processes


def fetch(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


@pytest.mark.processes
def test_runscheduler_serves_the_same_metrics_on_its_own_port(
    scheduler_process: Any, client: Client, settings: Any
) -> None:
    settings.SCHEDULING_METRICS_ACCESS = "token"
    headers = bearer(user_with("view_job"))
    process = scheduler_process("tests.support.metrics_jobs", args=["--metrics-port", "0"])
    found = wait_for(
        lambda: re.search(r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)", process.output())
    )
    url = found.group(1)

    def ran_everywhere() -> Samples | None:
        samples = fetch(url)
        last = named(samples, "scheduling_job_last_run_timestamp_seconds")
        wanted = {
            frozenset({("job_id", "metrics.ok"), ("status", "succeeded")}),
            frozenset({("job_id", "metrics.fails"), ("status", "failed")}),
            frozenset({("job_id", "metrics.in-pool"), ("status", "succeeded")}),
        }
        leading = value(samples, "scheduling_schedulers", role="leader") == 1
        return samples if leading and wanted <= set(last) else None

    # The process pool's children start slowly on a busy machine: a deadline, not a measure.
    samples = wait_for(ran_everywhere, timeout=90, interval=0.5)

    assert value(samples, "scheduling_jobs", state="scheduled") == 4  # with the built-in prune job
    assert value(samples, "scheduling_job_last_success_timestamp_seconds", job_id="metrics.in-pool")
    # The web endpoint, in this process, reads the same database: the same jobs, and the runs of
    # the scheduler's threads and of its pool's children.
    web = scrape(client, headers)
    assert named(web, "scheduling_jobs") == named(samples, "scheduling_jobs")
    for job_id in ("metrics.ok", "metrics.in-pool"):
        assert value(web, "scheduling_window_runs", job_id=job_id, status="succeeded")
    assert value(web, "scheduling_window_runs", job_id="metrics.fails", status="failed")


# The README


def test_the_readme_lists_every_metric_and_its_queries_name_only_those(
    client: Client, token_access: dict, declared: JobStore
) -> None:
    run("ok", "succeeded", ago=60, duration=0.5)
    section = (ROOT / "README.md").read_text().split("### Prometheus metrics")[1].split("\n## ")[0]
    families = {family.name for family in metrics.DatabaseCollector().collect()}

    assert set(re.findall(r"^\| `(scheduling_\w+)` \|", section, re.MULTILINE)) == families
    named_in_queries = {
        re.sub(r"_(bucket|gsum|gcount)$", "", name)
        for block in re.findall(r"```(?:promql|json)\n(.*?)```", section, re.DOTALL)
        for name in re.findall(r"\bscheduling_\w+", block)
    }
    assert named_in_queries <= families
    assert json.loads(re.findall(r"```json\n(.*?)```", section, re.DOTALL)[0])["type"] == "table"
