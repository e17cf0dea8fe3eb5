"""manage.py scheduling export and import: schedules as data, moved between databases."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.utils import timezone, translation
from django_apscheduler.models import DjangoJob

from scheduling import calendars, control, declarations, job
from scheduling.jobs import prune_history
from scheduling.models import Calendar, ScheduledJob
from scheduling.schedules import build_trigger
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import transfer_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(registry: dict, monkeypatch: pytest.MonkeyPatch) -> User:
    """The jobs and calendars of tests.support.transfer_jobs, stored; and the importing user."""
    monkeypatch.setattr(calendars, "registry", {})
    transfer_jobs.declare()
    transfer_jobs.populate()
    return user_with("alice", *IMPORT_PERMISSIONS)


# Every permission an import may need: the admin's for adding, changing, pausing and deleting.
IMPORT_PERMISSIONS = (
    "add_job",
    "change_schedule",
    "pause_job",
    "delete_job",
    "add_calendar",
    "change_calendar",
    "delete_calendar",
)


def user_with(username: str, *codenames: str, **fields: Any) -> User:
    user = User.objects.create_user(username, **fields)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="scheduling", codename__in=codenames)
    )
    return user


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("scheduling", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def export() -> dict[str, Any]:
    return json.loads(run("export")[0])


def write(tmp_path: Path, data: Any, name: str = "schedules.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def jobs_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in data["jobs"]}


def empty_the_database() -> None:
    DjangoJob.objects.all().delete()
    ScheduledJob.objects.all().delete()
    Calendar.objects.all().delete()


def test_export_writes_each_jobs_schedule_options_and_state_and_the_calendars(site: User) -> None:
    data = export()
    assert data["version"] == 1
    jobs = jobs_of(data)
    assert sorted(jobs) == ["nightly", "refresh", "stray", "weekly-report"]
    nightly = jobs["nightly"]
    assert nightly["source"] == "code"
    assert nightly["paused"]
    assert not nightly["overridden"]
    assert nightly["schedule"] == {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    assert nightly["options"]["calendars"] == ["Closing days"]
    refresh = jobs["refresh"]
    assert refresh["overridden"]
    assert not refresh["paused"]
    assert refresh["schedule"]["interval"] == {"minutes": 10}
    assert refresh["options"]["timeout"] == 120
    weekly = jobs["weekly-report"]
    assert weekly["source"] == "external"
    assert weekly["declared"]
    assert (weekly["args"], weekly["kwargs"]) == (["weekly"], {"recipients": 3})
    assert weekly["options"]["retries"] == 2
    assert weekly["options"]["alert"]["to"] == ["log"]
    assert jobs["stray"]["declared"] is False  # its function is neither @job nor @schedulable
    assert [calendar["name"] for calendar in data["calendars"]] == ["Closing days", "Freeze"]
    closing, freeze = data["calendars"]
    assert closing["source"] == "code"
    assert closing["periods"][0]["day"] == "2026-12-24"
    assert freeze["source"] == "admin"
    assert freeze["periods"][0]["start"] == "2026-12-27T18:00:00+00:00"


def test_export_as_yaml_holds_the_same_data(site: User) -> None:
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(run("export", "--format", "yaml")[0]) == export()


def test_yaml_without_pyyaml_says_it_is_needed(site: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if not installed: importing it fails
    with pytest.raises(CommandError, match="PyYAML"):
        run("export", "--format", "yaml")


def test_export_then_import_into_an_empty_database_round_trips_exactly(site: User, tmp_path: Path) -> None:
    first = run("export")[0]
    path = write(tmp_path, first)
    empty_the_database()
    out, err = run("import", path, "--user", "alice")
    assert "skipped   job stray: its function tests.support.transfer_jobs:forgotten is not declared" in err
    assert "Imported as alice: 5 added, 1 changed, 0 replaced, 1 paused" in out
    expected = json.loads(first)
    expected["jobs"] = [entry for entry in expected["jobs"] if entry["declared"]]
    assert export() == expected
    path_again = write(tmp_path, run("export")[0], "again.json")
    assert run("import", path_again, "--user", "alice")[0].splitlines() == [
        "Imported as alice: 0 added, 0 changed, 0 replaced, 0 paused, 0 resumed, 0 removed, 0 skipped."
    ]


def test_import_shows_the_diff_and_a_dry_run_writes_nothing(site: User, tmp_path: Path) -> None:
    data = export()
    jobs = jobs_of(data)
    jobs["weekly-report"]["schedule"] = {"cron": "30 9 * * 1-5", "timezone": "UTC"}
    jobs["weekly-report"]["options"]["timeout"] = 300
    jobs["refresh"]["paused"] = True
    jobs["nightly"]["paused"] = False
    data["jobs"].append({**jobs["weekly-report"], "id": "daily-report", "args": ["daily"]})
    data["calendars"][1]["description"] = "Year-end freeze"
    path = write(tmp_path, data)
    before = run("export")[0]
    logged = LogEntry.objects.count()

    out, _ = run("import", path, "--user", "alice", "--dry-run")
    assert out.splitlines() == [
        "changed   calendar Freeze: description",
        "resumed   job nightly",
        "paused    job refresh",
        "changed   job weekly-report: schedule, timeout",
        "added     job daily-report",
        "Dry run: 1 added, 2 changed, 0 replaced, 1 paused, 1 resumed, 0 removed, 1 skipped; "
        "nothing was written.",
    ]
    assert run("export")[0] == before
    assert LogEntry.objects.count() == logged

    out, _ = run("import", path, "--user", "alice")
    assert out.splitlines()[-1].startswith("Imported as alice: 1 added, 2 changed")
    after = jobs_of(export())
    assert after["weekly-report"]["schedule"]["cron"] == "30 9 * * 1-5"
    assert after["weekly-report"]["options"]["timeout"] == 300
    assert after["refresh"]["paused"]
    assert not after["nightly"]["paused"]
    assert after["daily-report"]["args"] == ["daily"]


def test_each_change_is_in_the_admins_history_as_the_importing_user(site: User, tmp_path: Path) -> None:
    data = export()
    jobs = jobs_of(data)
    jobs["weekly-report"]["schedule"] = {"cron": "30 9 * * 1-5", "timezone": "UTC"}
    jobs["refresh"]["paused"] = True
    data["jobs"] = [entry for entry in data["jobs"] if entry["id"] != "stray"]
    path = write(tmp_path, data)
    run("import", path, "--user", "alice", "--prune")
    entries = {
        (entry.object_id, entry.action_flag): entry.change_message
        for entry in LogEntry.objects.filter(user=site)
    }
    assert entries[("weekly-report", CHANGE)].startswith("Changed by import from “At 08:00, only on Monday")
    assert "09:30" in entries[("weekly-report", CHANGE)]
    assert entries[("refresh", CHANGE)] == "Paused by import"
    assert entries[("stray", DELETION)] == "Removed by import"
    assert len(entries) == 3

    empty_the_database()
    run("import", path, "--user", "alice")
    assert LogEntry.objects.filter(user=site, action_flag=ADDITION, object_id="nightly").exists()


def test_jobs_and_calendars_missing_from_the_file_are_removed_only_with_prune(
    site: User, tmp_path: Path
) -> None:
    data = export()
    data["jobs"] = [entry for entry in data["jobs"] if entry["id"] != "stray"]
    data["jobs"] = [{**entry, "options": {**entry["options"], "calendars": []}} for entry in data["jobs"]]
    data["calendars"] = [calendar for calendar in data["calendars"] if calendar["name"] != "Freeze"]
    path = write(tmp_path, data)

    out, _ = run("import", path, "--user", "alice")
    assert "kept      job stray: not in the file (--prune removes it)" in out
    assert "kept      calendar Freeze: not in the file (--prune removes it)" in out
    assert DjangoJob.objects.filter(id="stray").exists()

    out, _ = run("import", path, "--user", "alice", "--prune")
    assert "removed   job stray" in out.splitlines()
    assert "removed   calendar Freeze" in out.splitlines()
    assert not DjangoJob.objects.filter(id="stray").exists()
    assert not Calendar.objects.filter(name="Freeze").exists()


def test_a_job_whose_function_is_not_declared_is_skipped_by_name(site: User, tmp_path: Path) -> None:
    data = export()
    data["jobs"] = [entry for entry in data["jobs"] if entry["id"] == "stray"]
    empty_the_database()
    _, err = run("import", write(tmp_path, data), "--user", "alice")
    assert err.strip() == (
        "skipped   job stray: its function tests.support.transfer_jobs:forgotten is not declared here "
        "with @job or @schedulable"
    )
    assert not DjangoJob.objects.exists()


def huge_integer(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["options"]["misfire_grace_time"] = 10**400


def too_many_arguments(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["args"] = ["weekly", "extra"]


def option_named_job_id(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["options"]["job_id"] = "other"


def option_named_schedule(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["options"]["schedule"] = {"interval": 60}


def id_with_a_newline(data: dict[str, Any]) -> None:
    data["jobs"].append({**jobs_of(data)["weekly-report"], "id": "two\nlines"})


def id_with_an_escape(data: dict[str, Any]) -> None:
    data["jobs"].append({**jobs_of(data)["nightly"], "id": "\x1b[2Jnightly"})


def id_reversed(data: dict[str, Any]) -> None:
    data["jobs"].append({**jobs_of(data)["nightly"], "id": "\u202eylthgin"})


def calendar_with_a_newline(data: dict[str, Any]) -> None:
    data["calendars"].append({"name": "a\nb"})


def bad_cron(data: dict[str, Any]) -> None:
    # The first change is valid and the second is not: neither is applied.
    jobs_of(data)["nightly"]["paused"] = False
    jobs_of(data)["weekly-report"]["schedule"] = {"cron": "61 8 * * 1"}


def unknown_option(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["options"]["color"] = "red"


def unknown_job_field(data: dict[str, Any]) -> None:
    jobs_of(data)["nightly"]["colour"] = "red"


def unknown_top_field(data: dict[str, Any]) -> None:
    data["extra"] = 1


def unknown_calendar(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["options"]["calendars"] = ["Nowhere"]


def bad_period(data: dict[str, Any]) -> None:
    data["calendars"][1]["periods"][0]["end"] = "2026-12-27T17:00:00+00:00"


def wrong_version(data: dict[str, Any]) -> None:
    data["version"] = 99


def version_true(data: dict[str, Any]) -> None:
    data["version"] = True


def cron_that_never_fires(data: dict[str, Any]) -> None:
    jobs_of(data)["weekly-report"]["schedule"] = {"cron": "0 0 30 2 *"}


def version_float(data: dict[str, Any]) -> None:
    data["version"] = 1.0


def day_of_year_one(data: dict[str, Any]) -> None:
    data["calendars"][1]["periods"].append({"day": "0001-01-01"})


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (bad_cron, "job 'weekly-report': "),
        (unknown_option, "job 'weekly-report': unknown job option color"),
        (cron_that_never_fires, "job 'weekly-report': this cron schedule never fires"),
        (unknown_job_field, r"jobs\[0\]: unknown field 'colour'"),
        (unknown_top_field, "unknown field 'extra'"),
        (unknown_calendar, "job 'weekly-report': calendars: there is no calendar named \"Nowhere\""),
        (bad_period, "calendar 'Freeze': end must be after the start"),
        (wrong_version, "version must be 1, not 99"),
        (version_true, "version must be 1, not True"),
        (version_float, r"version must be 1, not 1\.0"),
        (day_of_year_one, "calendar 'Freeze': day must be a date from 1970 to 9999, not '0001-01-01'"),
        (huge_integer, r"schedules\.json: An integer of 401 digits is too long; the limit is 20"),
        (
            too_many_arguments,
            r"job 'weekly-report': the arguments do not match report\(kind, \*, recipients=1\): "
            "too many positional arguments",
        ),
        (option_named_job_id, "job 'weekly-report': unknown job option job_id; known: "),
        (option_named_schedule, "job 'weekly-report': unknown job option schedule; known: "),
        (id_with_a_newline, r"job 'two\\nlines': id must not contain a control character \(it has '\\n'\)"),
        (id_with_an_escape, r"job '\\x1b\[2Jnightly': id must not contain a control character"),
        (id_reversed, r"id must not contain a control character \(it has '\\u202e'\)"),
        (
            calendar_with_a_newline,
            r"calendars\[2\]: name must not contain a control character \(it has '\\n'\)",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_fault_and_nothing_is_changed(
    site: User, tmp_path: Path, spoil: Any, message: str
) -> None:
    data = export()
    spoil(data)
    before = run("export")[0]
    with pytest.raises(CommandError, match=message) as refused:
        run("import", write(tmp_path, data), "--user", "alice")
    assert str(refused.value).endswith("nothing was changed")
    assert run("export")[0] == before
    assert not LogEntry.objects.exists()


def test_a_malformed_file_a_missing_file_and_an_unknown_user_are_refused(site: User, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"broken\.json is not JSON"):
        run("import", write(tmp_path, '{"version": 1, "jobs": [', "broken.json"), "--user", "alice")
    with pytest.raises(CommandError, match=r"missing\.json: no such file"):
        run("import", str(tmp_path / "missing.json"), "--user", "alice")
    with pytest.raises(CommandError, match="No user named 'mallory'"):
        run("import", write(tmp_path, export()), "--user", "mallory")
    with pytest.raises(CommandError, match=r"jobs\[0\] must be an object"):
        run("import", write(tmp_path, {"version": 1, "jobs": ["nightly"]}), "--user", "alice")
    with pytest.raises(CommandError, match=r"jobs\[0\]: options must be an object, not \['timeout'\]"):
        run(
            "import",
            write(tmp_path, {"version": 1, "jobs": [{"id": "x", "options": ["timeout"]}]}),
            "--user",
            "alice",
        )


def test_a_yaml_file_is_imported_like_json(site: User, tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = write(tmp_path, run("export", "--format", "yaml")[0], "schedules.yaml")
    before = export()
    empty_the_database()
    run("import", path, "--user", "alice")
    before["jobs"] = [entry for entry in before["jobs"] if entry["declared"]]
    assert export() == before


def test_a_calendar_in_use_is_not_pruned(site: User, tmp_path: Path) -> None:
    data = export()
    data["calendars"] = [calendar for calendar in data["calendars"] if calendar["name"] != "Freeze"]
    with pytest.raises(CommandError, match="calendar 'Freeze' is not deleted: weekly-report name it"):
        run("import", write(tmp_path, data), "--user", "alice", "--prune")
    assert control.calendar_names() == ["Closing days", "Freeze"]


def test_a_job_that_cannot_be_loaded_is_exported_flagged_and_skipped(site: User, tmp_path: Path) -> None:
    DjangoJob.objects.create(id="garbled", next_run_time=None, job_state=b"not a pickle")
    entry = jobs_of(export())["garbled"]
    assert entry["declared"] is False
    assert "error" in entry
    data = {"version": 1, "jobs": [entry]}
    empty_the_database()
    _, err = run("import", write(tmp_path, data), "--user", "alice")
    assert err.startswith("skipped   job garbled: it could not be read where it was exported (")
    assert not DjangoJob.objects.exists()


NO_CHANGE = "Imported as alice: 0 added, 0 changed, 0 replaced, 0 paused, 0 resumed, 0 removed, 0 skipped."


def declared_only(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "jobs": [entry for entry in data["jobs"] if entry["declared"]]}


def test_a_declared_job_unlike_its_declaration_and_not_flagged_round_trips_and_is_imported_once(
    site: User, tmp_path: Path
) -> None:
    # As after a deploy that changed the declaration, before the scheduler's next start.
    store = JobStore()
    store.modify_job(
        store.lookup_job("nightly"), trigger=build_trigger({"cron": "0 4 * * *", "timezone": "Europe/Berlin"})
    )
    data = declared_only(export())
    assert (jobs_of(data)["nightly"]["schedule"]["cron"], jobs_of(data)["nightly"]["overridden"]) == (
        "0 4 * * *",
        False,
    )
    path = write(tmp_path, data)

    empty_the_database()
    run("import", path, "--user", "alice")
    assert export() == data
    assert run("import", path, "--user", "alice")[0].splitlines() == [NO_CHANGE]

    # Flagged here, not in the file: the flag is cleared once, nothing else changes.
    ScheduledJob.objects.filter(id="nightly").update(overridden_at=timezone.now())
    assert run("import", path, "--user", "alice")[0].splitlines() == [
        "changed   job nightly: overridden",
        NO_CHANGE.replace("0 changed", "1 changed"),
    ]
    assert run("import", path, "--user", "alice")[0].splitlines() == [NO_CHANGE]
    assert export() == data


def test_calendar_periods_are_compared_as_the_moments_they_mean_not_as_text(
    site: User, tmp_path: Path
) -> None:
    data = declared_only(export())
    freeze = data["calendars"][1]
    freeze["timezone"] = "Europe/Berlin"
    freeze["periods"] = [{"start": "2026-12-31T00:00", "end": "2027-01-01T00:00", "label": " new year "}]
    path = write(tmp_path, data)

    assert (
        run("import", path, "--user", "alice")[0].splitlines()[0]
        == "changed   calendar Freeze: timezone, periods"
    )
    assert export()["calendars"][1]["periods"] == [
        {
            "day": None,
            "start": "2026-12-30T23:00:00+00:00",
            "end": "2026-12-31T23:00:00+00:00",
            "label": "new year",
        }
    ]
    assert run("import", path, "--user", "alice")[0].splitlines() == [
        "kept      job stray: not in the file (--prune removes it)",
        NO_CHANGE,
    ]


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "deep.json",
            '{"version": 1, "jobs": [{"id": "x", "args": ' + deep(100_000) + "}]}",
            r"deep\.json: The JSON is nested more than 40 levels deep",
        ),
        (
            "deep.yaml",
            "version: 1\njobs:\n- id: x\n  args: " + deep(100_000) + "\n",
            r"deep\.yaml is nested more than 40 levels deep",
        ),
        (
            "huge.yaml",
            "version: 1\njobs:\n- id: x\n  options: {misfire_grace_time: " + "9" * 400 + "}\n",
            r"huge\.yaml: An integer of 400 digits is too long; the limit is 20",
        ),
        (
            "huger.yaml",
            "version: 1\njobs:\n- id: x\n  options: {misfire_grace_time: " + "9" * 5000 + "}\n",
            r"huger\.yaml is not YAML: Exceeds the limit",
        ),
        (
            "alias.yaml",
            "version: 1\njobs:\n- &job {id: x}\n- *job\n",
            r"alias\.yaml: YAML aliases \(\*name\) are not read",
        ),
        (
            "dated.yaml",
            "version: 1\ncalendars:\n- name: x\n  periods: [{day: 2026-12-24}]\n",
            r"dated\.yaml holds a value JSON has not \(quote dates and times\)",
        ),
    ],
)
def test_a_file_beyond_the_parsers_limits_is_refused_naming_the_file(
    site: User, tmp_path: Path, name: str, text: str, message: str
) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    before = run("export")[0]
    with pytest.raises(CommandError, match=message) as refused:
        run("import", write(tmp_path, text, name), "--user", "alice")
    assert str(refused.value).endswith("nothing was changed")
    assert run("export")[0] == before


def test_an_exported_yaml_file_has_no_aliases(site: User) -> None:
    pytest.importorskip("yaml")
    assert "&id" not in run("export", "--format", "yaml")[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"source": "external", "function": "tests.support.transfer_jobs:report", "args": ["weekly"]},
        {"function": "tests.support.transfer_jobs:report"},
    ],
)
def test_import_never_replaces_the_function_of_a_job_declared_in_code(
    site: User, tmp_path: Path, changes: dict[str, Any]
) -> None:
    data = declared_only(export())
    jobs_of(data)["nightly"].update(changes)

    _, err = run("import", write(tmp_path, data), "--user", "alice")

    assert err.splitlines() == [
        "skipped   job nightly: this code declares a job with this id (function "
        "tests.support.transfer_jobs:nightly_report): import never replaces it"
    ]
    job = JobStore().lookup_job("nightly")
    assert (job.func_ref, job.args) == ("tests.support.transfer_jobs:nightly_report", ())


def test_prune_never_removes_a_job_or_calendar_declared_in_code(site: User, tmp_path: Path) -> None:
    job(cron="17 3 * * *", id="scheduling.prune_history")(prune_history)  # as scheduling/jobs.py does
    sync(JobStore(), declarations.registry.values())
    data = export()
    data["jobs"] = [entry for entry in data["jobs"] if entry["source"] != "code"]
    data["calendars"] = [calendar for calendar in data["calendars"] if calendar["source"] != "code"]

    out, _ = run("import", write(tmp_path, data), "--user", "alice", "--prune")

    assert out.splitlines() == [
        "kept      job nightly: declared in code: import never removes it",
        "kept      job refresh: declared in code: import never removes it",
        "kept      job scheduling.prune_history: declared in code: import never removes it",
        "kept      calendar Closing days: declared in code: import never removes it",
        "Imported as alice: 0 added, 0 changed, 0 replaced, 0 paused, 0 resumed, 0 removed, 1 skipped.",
    ]
    assert set(DjangoJob.objects.values_list("id", flat=True)) >= {
        "nightly",
        "refresh",
        "scheduling.prune_history",
    }
    assert Calendar.objects.filter(name="Closing days").exists()


def test_the_user_needs_the_permissions_the_admin_asks_for_those_changes(site: User, tmp_path: Path) -> None:
    data = export()
    jobs_of(data)["weekly-report"]["schedule"] = {"cron": "30 9 * * 1-5", "timezone": "UTC"}
    data["jobs"] = [entry for entry in data["jobs"] if entry["id"] != "stray"]
    path = write(tmp_path, data)
    user_with("bob", "change_schedule")
    before = run("export")[0]

    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(
            CommandError,
            match=r"^user 'bob' lacks the permission scheduling\.delete_job \(removed job stray\); "
            "nothing was changed$",
        ):
            run("import", path, "--user", "bob", "--prune", *dry_run)
    assert run("export")[0] == before
    assert not LogEntry.objects.exists()

    with pytest.raises(
        CommandError, match=r"^user 'nobody' lacks the permission scheduling\.change_schedule "
    ):
        run("import", path, "--user", user_with("nobody").username)
    # What needs no permission: a file that changes nothing.
    run("import", write(tmp_path, before, "same.json"), "--user", "nobody")

    user_with("carol", *IMPORT_PERMISSIONS, is_active=False)
    with pytest.raises(CommandError, match=r"^User 'carol' is not active; nothing was changed$"):
        run("import", path, "--user", "carol")

    out, _ = run("import", path, "--user", "bob")
    assert out.splitlines()[0] == "changed   job weekly-report: schedule"
    User.objects.create_superuser("root")
    assert "1 removed" in run("import", path, "--user", "root", "--prune")[0]


def test_a_calendar_name_is_compared_as_it_is_stored_without_its_outer_spaces(
    site: User, tmp_path: Path
) -> None:
    # Only add_calendar: "Freeze " is the stored "Freeze", a change, which needs change_calendar.
    user_with("adder", "add_calendar")
    path = write(tmp_path, {"version": 1, "calendars": [{"name": "Freeze ", "description": "x"}]})
    with pytest.raises(
        CommandError, match=r"^user 'adder' lacks the permission scheduling\.change_calendar \(changed "
    ):
        run("import", path, "--user", "adder")
    assert Calendar.objects.get(name="Freeze").periods.count() == 1

    out, _ = run("import", path, "--user", "alice")
    assert out.splitlines()[0] == "changed   calendar Freeze: description, periods"
    assert LogEntry.objects.get(object_id=str(Calendar.objects.get(name="Freeze").pk)).action_flag == CHANGE
    assert "calendar Freeze" not in run("import", path, "--user", "alice")[0]

    data = export()
    data["calendars"].append({"name": "Solo "})
    solo = write(tmp_path, data, "solo.json")
    out, _ = run("import", solo, "--user", "alice", "--prune")
    assert "added     calendar Solo" in out.splitlines()
    assert "removed   calendar Solo" not in out.splitlines()
    assert Calendar.objects.filter(name="Solo").exists()


def test_two_calendars_named_alike_but_for_outer_spaces_are_refused(site: User, tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "calendars": [{"name": "Twin"}, {"name": "Twin "}]})
    with pytest.raises(CommandError, match=r"calendars\[1\]: 'Twin ' is in the file twice"):
        run("import", path, "--user", "alice")
    assert not Calendar.objects.filter(name="Twin").exists()


def test_a_period_in_the_repeated_hour_of_a_clock_change_is_imported_once(site: User, tmp_path: Path) -> None:
    period = {"start": "2026-11-01T01:30", "end": "2026-11-01T03:00"}  # 01:00-02:00 happens twice
    data = declared_only(export())
    data["calendars"].append({"name": "T1", "timezone": "US/Eastern", "periods": [period]})
    path = write(tmp_path, data)

    assert "added     calendar T1" in run("import", path, "--user", "alice")[0].splitlines()
    assert "calendar T1" not in run("import", path, "--user", "alice")[0]


def test_the_history_is_written_in_english_whatever_the_commands_language(site: User, tmp_path: Path) -> None:
    data = export()
    jobs = jobs_of(data)
    jobs["weekly-report"]["schedule"] = {"cron": "30 9 * * 1-5", "timezone": "UTC"}
    jobs["refresh"]["paused"] = True
    data["calendars"][1]["description"] = "Year-end freeze"
    path = write(tmp_path, data)

    with translation.override("ja"):
        out, _ = run("import", path, "--user", "alice")

    assert "changed   calendar Freeze" not in out  # the printed diff is in the command's language
    messages = {entry.object_repr: entry.change_message for entry in LogEntry.objects.filter(user=site)}
    assert messages["Freeze"] == "Changed by import: description"
    assert messages["refresh"] == "Paused by import"
    assert messages["weekly-report"].startswith("Changed by import from “At 08:00, only on Monday; max ")
    assert "” to “At 09:30, Monday through Friday; max instances 1, " in messages["weekly-report"]
    assert len(messages) == 3


def test_a_declared_job_changed_but_not_flagged_in_the_file_is_not_reported_as_flag_changed(
    site: User, tmp_path: Path
) -> None:
    data = declared_only(export())
    jobs_of(data)["nightly"]["options"]["retries"] = 3
    assert jobs_of(data)["nightly"]["overridden"] is False
    path = write(tmp_path, data)

    assert run("import", path, "--user", "alice")[0].splitlines()[0] == "changed   job nightly: retries"
    message = LogEntry.objects.get(object_id="nightly", action_flag=CHANGE).change_message
    assert message.startswith("Changed by import from ")
    assert "Marked" not in message
    assert declared_only(export())["jobs"] == data["jobs"]
    assert "job nightly" not in run("import", path, "--user", "alice")[0]
