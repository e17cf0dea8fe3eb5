"""The translation catalogues against the code: what CI checks so that no string ships untranslated.

``django-admin makemessages`` is run on a copy of the app (so the checkout is never rewritten), and
each language's catalogue it merged is read back: a msgid the committed catalogue lacked arrives
with an empty translation, one it had with a changed text arrives fuzzy. Both are reported by msgid.
"""

from __future__ import annotations

import gettext
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import scheduling

PACKAGE = Path(scheduling.__file__).parent
ROOT = PACKAGE.parent
LANGUAGES = ("ja", "zh_Hans")


@dataclass(frozen=True)
class Entry:
    msgid: str
    translated: bool
    fuzzy: bool


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file, header and obsolete (``#~``) entries left out."""
    entries = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        fuzzy = False
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            elif line.startswith('"') and key:
                fields[key] += _unquote(line)
            elif not line.startswith("#") and " " in line:
                key, _, rest = line.partition(" ")
                fields[key] = _unquote(rest)
        msgid = fields.get("msgid", "")
        if msgid:
            translations = [value for name, value in fields.items() if name.startswith("msgstr")]
            entries.append(Entry(msgid, bool(translations) and all(translations), fuzzy))
    return entries


def _unquote(text: str) -> str:
    return text.strip()[1:-1]


def problems(work: Path, package: Path = PACKAGE, languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    """Every msgid of ``package`` that a catalogue lacks or has untranslated or fuzzy, as
    "ja: missing or untranslated: …" lines; empty when the catalogues are complete."""
    copy = work / "scheduling"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "makemessages",
            "--no-obsolete",
            *(f"--locale={code}" for code in languages),
        ],
        cwd=copy,
        env=environment,
        check=True,
        capture_output=True,
    )
    found = []
    for code in languages:
        for entry in read_po(copy / "locale" / code / "LC_MESSAGES" / "django.po"):
            if entry.fuzzy:
                found.append(f"{code}: fuzzy (its msgid changed): {entry.msgid}")
            elif not entry.translated:
                found.append(f"{code}: missing or untranslated: {entry.msgid}")
    return found


def stale_compiled(work: Path, package: Path = PACKAGE, languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    """Languages whose committed .mo does not hold what their .po says (compilemessages not run)."""
    stale = []
    for code in languages:
        folder = package / "locale" / code / "LC_MESSAGES"
        compiled = folder / "django.mo"
        if not compiled.exists():
            stale.append(f"{code}: no django.mo")
            continue
        fresh = work / f"{code}.mo"
        subprocess.run(
            ["msgfmt", "--check", "-o", str(fresh), str(folder / "django.po")],
            check=True,
            capture_output=True,
        )
        if _catalogue(fresh) != _catalogue(compiled):
            stale.append(f"{code}: django.mo differs from django.po")
    return stale


def _catalogue(path: Path) -> dict[object, str]:
    with path.open("rb") as file:
        return dict(gettext.GNUTranslations(file)._catalog)  # type: ignore[attr-defined]
