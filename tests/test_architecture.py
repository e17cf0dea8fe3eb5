"""Rules of the package's layout that a reader should not have to remember.

APScheduler's private API (names with a leading underscore on its scheduler, job, job store and
executor classes) changes without notice between releases. It is used only in the modules that
own what it reaches: the job store (``store``) and the schedule code (``schedules``), plus the
loop hook the scheduler's loop overrides. Everything else goes through their public methods
(``JobStore.new_job``, ``load_row``, ``modify_job``). A use is an attribute read or written, a
method overriding one, or the name as a string (``getattr(job, "_modify")``, ``vars(job)[...]``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scheduling

# Collected from APScheduler 3.11's Job, BaseScheduler, BackgroundScheduler, BaseJobStore,
# BaseExecutor, BasePoolExecutor and django-apscheduler's DjangoJobStore. Left out: names too
# generic to tell theirs from ours (``_lock``, ``_pool``, ``_thread``, ``_logger``, ``_daemon``,
# ``_configure``), which our own classes use for their own attributes.
APSCHEDULER_PRIVATE = frozenset(
    {
        "_alias",
        "_apply_jitter",
        "_check_uwsgi",
        "_create_default_executor",
        "_create_default_jobstore",
        "_create_lock",
        "_create_plugin_instance",
        "_create_trigger",
        "_dispatch_event",
        "_do_submit_job",
        "_event",
        "_executor_classes",
        "_executor_plugins",
        "_executors",
        "_executors_lock",
        "_fix_paused_jobs_sorting",
        "_get_job",
        "_get_jobs",
        "_get_run_times",
        "_increment_field_value",
        "_instances",
        "_job_defaults",
        "_jobstore_alias",
        "_jobstore_classes",
        "_jobstore_plugins",
        "_jobstores",
        "_jobstores_lock",
        "_listeners",
        "_listeners_lock",
        "_lookup_executor",
        "_lookup_job",
        "_lookup_jobstore",
        "_main_loop",
        "_modify",
        "_pending_jobs",
        "_process_jobs",
        "_real_add_job",
        "_reconstitute_job",
        "_run_job_error",
        "_run_job_success",
        "_scheduler",
        "_set_field_value",
        "_trigger_classes",
        "_trigger_plugins",
    }
)

ALLOWED: dict[str, frozenset[str]] = {
    "scheduling.store": APSCHEDULER_PRIVATE,
    "scheduling.schedules": APSCHEDULER_PRIVATE,
    # The scheduler's loop replaces BackgroundScheduler's loop hook (``_main_loop``), which waits
    # on the scheduler's wake-up event (``_event``, set by ``wakeup()``): BackgroundScheduler has
    # no public way to run its loop differently.
    "scheduling.runtime.loop": frozenset({"_main_loop", "_event"}),
}

PACKAGE = Path(scheduling.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(
    (module_name(path), path) for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts
)


def private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each reach into APScheduler's private API: an attribute read or written
    (``job._modify``, ``self._jobstores``), a method overriding one (``def _main_loop``), or its
    name as a string (``getattr(job, "_modify")``, ``job.__dict__["_scheduler"]``)."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in APSCHEDULER_PRIVATE:
            uses.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and node.value in APSCHEDULER_PRIVATE:
            uses.append((node.lineno, node.value))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in APSCHEDULER_PRIVATE:
            uses.append((node.lineno, node.name))
    return sorted(uses)


def test_every_module_of_the_package_is_checked() -> None:
    names = {name for name, _ in MODULES}
    assert {"scheduling.sync", "scheduling.runtime.loop", "scheduling.admin.jobs"} <= names
    assert set(ALLOWED) <= names, "an allowed module was renamed or removed: update ALLOWED"


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_apscheduler_private_api_is_used_only_where_it_is_owned(name: str, path: Path) -> None:
    allowed = ALLOWED.get(name, frozenset())
    uses = private_uses(ast.parse(path.read_text(), filename=str(path)))
    outside = [f"{path.name}:{line} {attr}" for line, attr in uses if attr not in allowed]
    assert not outside, (
        f"{name} reaches into APScheduler's private API; go through the store's or the schedules' "
        f"public methods (or give them one): {', '.join(outside)}"
    )


@pytest.mark.parametrize(
    "source",
    [
        "job._modify(trigger=t)",
        "store._reconstitute_job(state)",
        "def _main_loop(self): pass",
        "getattr(job, '_modify')(trigger=t)",
        "setattr(job, '_jobstore_alias', 'default')",
        "vars(job)['_scheduler']",
    ],
)
def test_the_check_sees_each_way_of_reaching_a_private_name(source: str) -> None:
    assert private_uses(ast.parse(source)), source
