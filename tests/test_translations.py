"""The Japanese and Chinese catalogues are complete, compiled, and say what the code says.

CI fails here when a string is added or changed without its translations (makemessages is run on a
copy of the app, the merged catalogues read back), or when a .po was edited without compilemessages.
"""

from __future__ import annotations

import shutil
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone, translation

from scheduling.schedules import build_trigger, describe, format_local
from tests.support import catalogues

pytestmark = pytest.mark.skipif(
    shutil.which("msgfmt") is None or shutil.which("xgettext") is None,
    reason="GNU gettext (msgfmt, xgettext) is not installed; .ci/run installs it",
)


def test_every_string_of_the_app_is_translated_in_every_catalogue(tmp_path: Path) -> None:
    found = catalogues.problems(tmp_path)
    assert not found, "untranslated strings (see README, Translations):\n" + "\n".join(found)


def test_the_check_names_a_new_string_that_has_no_translation(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(catalogues.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    with (package / "checks.py").open("a") as module:
        module.write('\n\ndef _new_message() -> str:\n    return _("A new sentence nobody translated yet")\n')

    found = catalogues.problems(tmp_path / "work", package=package)

    assert found == [
        "ja: missing or untranslated: A new sentence nobody translated yet",
        "zh_Hans: missing or untranslated: A new sentence nobody translated yet",
    ]


def test_the_compiled_catalogues_hold_what_the_po_files_say(tmp_path: Path) -> None:
    assert catalogues.stale_compiled(tmp_path) == []


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("ja", ["2 時間", "ごと"]),
        ("zh-hans", ["每", "2 小时"]),
    ],
)
def test_an_interval_is_described_in_the_active_language(language: str, words: list[str]) -> None:
    with translation.override(language):
        text = describe(build_trigger({"interval": {"hours": 2}}))
    assert all(word in text for word in words), text


@pytest.mark.parametrize(
    ("language", "weekday"), [("en-us", "Monday"), ("ja", "月曜日"), ("zh-hans", "星期一")]
)
def test_a_cron_schedule_is_described_by_cron_descriptor_in_the_active_language(
    language: str, weekday: str
) -> None:
    with translation.override(language):
        text = describe(build_trigger({"cron": "30 6 * * 1"}))
    assert weekday in text, text
    assert "06:30" in text, text


def test_the_api_answers_errors_in_the_requested_language_with_the_same_code() -> None:
    # LocaleMiddleware activates the request's language in this thread and leaves it on: the
    # override puts the one before back for the tests that follow.
    with translation.override(translation.get_language()):
        answers = {
            language: Client(headers={"accept-language": language}).get("/scheduling/api/jobs/").json()
            for language in ("en", "ja", "zh-hans")
        }
    assert {answer["code"] for answer in answers.values()} == {"not_authenticated"}
    assert len({answer["error"] for answer in answers.values()}) == 3, answers


@pytest.mark.parametrize(
    ("language", "shown"),
    [
        ("en", "2026-11-23 14:05:09 CET"),
        ("ja", "2026年11月23日 14:05:09 CET"),
        ("zh-hans", "2026年11月23日 14:05:09 CET"),
    ],
)
def test_moments_are_shown_with_the_active_languages_date(language: str, shown: str) -> None:
    moment = datetime(2026, 11, 23, 13, 5, 9, tzinfo=UTC)
    with translation.override(language), timezone.override(zoneinfo.ZoneInfo("Europe/Berlin")):
        assert format_local(moment) == shown
