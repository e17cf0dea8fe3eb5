"""The schedules file: its fields, JSON or YAML text, and the checks of its shape.

What a value may be (a cron line, a time zone, a timeout) is not checked here but by
``scheduling.validation`` when the file is applied, so the limits are the same as everywhere.
The text itself is parsed by ``scheduling.safejson``, within the API's limits, YAML included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.utils.translation import gettext as _

from scheduling import safejson, validation

VERSION = 1
# A file is read whole: thousands of jobs fit, and nothing a person writes by hand comes near.
MAX_LENGTH = 32 * 1024 * 1024
# The document's own levels (jobs, a job, its options, an alert, its list) above the limit a job's
# arguments have on their own (scheduling.validation's, the API's).
MAX_DEPTH = safejson.MAX_DEPTH + 8
FORMATS = ("json", "yaml")
TOP_FIELDS = {"version", "jobs", "calendars"}
JOB_FIELDS = {
    "id",
    "name",
    "function",
    "declared",
    "source",
    "overridden",
    "paused",
    "schedule",
    "args",
    "kwargs",
    "options",
    "error",
}
# The JSON type of each field that has one; what its value may be is the validator's.
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "function": str,
    "declared": bool,
    "source": str,
    "overridden": bool,
    "paused": bool,
    "schedule": dict,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "error": str,
    "description": str,
    "timezone": str,
    "weekdays_only": bool,
    "periods": list,
    "day": (str, type(None)),
    "start": (str, type(None)),
    "end": (str, type(None)),
    "label": str,
}
CALENDAR_FIELDS = {"name", "description", "timezone", "weekdays_only", "source", "periods"}
PERIOD_FIELDS = {"day", "start", "end", "label"}


class DocumentError(ValueError):
    """A file that is not a schedules file; the message names the file and the place."""


def dumps(document: dict[str, Any], fmt: str) -> str:
    """The document as text; keys in a fixed order, so two exports of one state are identical."""
    if fmt == "yaml":
        yaml = _yaml()
        return yaml.dump(
            document, Dumper=_dumper(yaml), sort_keys=False, allow_unicode=True, default_flow_style=False
        )
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def load(path: Path) -> dict[str, Any]:
    """Read and check a schedules file: JSON, or YAML when its name ends in .yaml or .yml."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DocumentError(_("%(path)s: no such file") % {"path": path}) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(_("%(path)s cannot be read: %(error)s") % {"path": path, "error": exc}) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        text = _yaml_as_json(text, path)
    try:
        # Within the limits the API has: the standard parser raises RecursionError on deep nesting
        # and takes a 400-digit integer that no option can hold.
        document = safejson.loads(text, max_length=MAX_LENGTH, max_depth=MAX_DEPTH)
    except safejson.JsonInputError as exc:
        if exc.code == "invalid_json":
            raise DocumentError(_("%(path)s is not JSON: %(error)s") % {"path": path, "error": exc}) from None
        raise DocumentError(_("%(path)s: %(error)s") % {"path": path, "error": exc}) from None
    check(document, str(path))
    return document


def _yaml_as_json(text: str, path: Path) -> str:
    """YAML text as the JSON text of the same data, so that both formats meet the same limits.

    Before anything is built, the events are read once (no recursion) to refuse what building
    would choke on: nesting deeper than JSON may have (PyYAML builds recursively) and aliases,
    which can multiply a small file into billions of values (``dumps`` never writes any).
    """
    yaml = _yaml()
    level = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise DocumentError(
                    _("%(path)s: YAML aliases (*name) are not read; write the value out") % {"path": path}
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                level += 1
                if level > MAX_DEPTH:
                    raise DocumentError(
                        _("%(path)s is nested more than %(max)s levels deep")
                        % {"path": path, "max": MAX_DEPTH}
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                level -= 1
        document = yaml.safe_load(text)
    except DocumentError:
        raise
    # ValueError: what PyYAML's constructors let through (a date that does not exist, an integer
    # of more digits than int() converts).
    except (yaml.YAMLError, ValueError) as exc:
        raise DocumentError(_("%(path)s is not YAML: %(error)s") % {"path": path, "error": exc}) from None
    try:
        return json.dumps(document)
    except (TypeError, ValueError) as exc:  # a date, a set, a key that is not text
        raise DocumentError(
            _("%(path)s holds a value JSON has not (quote dates and times): %(error)s")
            % {"path": path, "error": exc}
        ) from None


def check(document: Any, name: str) -> None:
    """Refuse what is not a schedules file of this version, naming the first wrong place."""
    _check_object(document, TOP_FIELDS, name)
    # An integer, exactly: JSON's true and 1.0 compare equal to 1 in Python.
    version = document.get("version")
    if type(version) is not int or version != VERSION:
        raise DocumentError(
            _("%(name)s: version must be %(version)s, not %(value)r")
            % {"name": name, "version": VERSION, "value": version}
        )
    for key, fields, required in (("jobs", JOB_FIELDS, "id"), ("calendars", CALENDAR_FIELDS, "name")):
        items = document.get(key, [])
        if not isinstance(items, list):
            raise DocumentError(_("%(name)s: %(key)s must be a list") % {"name": name, "key": key})
        seen: set[Any] = set()
        for index, item in enumerate(items):
            place = f"{name}: {key}[{index}]"
            _check_object(item, fields, place)
            if not isinstance(item.get(required), str) or not item[required]:
                raise DocumentError(_("%(place)s has no %(field)s") % {"place": place, "field": required})
            identity = item[required]
            if required == "name":
                # A calendar's name as it is stored (stripped): "Twin" and "Twin " are one calendar.
                try:
                    identity = validation.calendar_name(required, identity)
                except validation.InputError as exc:
                    raise DocumentError(f"{place}: {exc}") from None
            if identity in seen:
                raise DocumentError(
                    _("%(place)s: %(value)r is in the file twice") % {"place": place, "value": item[required]}
                )
            seen.add(identity)
            for period_index, period in enumerate(item.get("periods", [])):
                _check_object(period, PERIOD_FIELDS, f"{place}.periods[{period_index}]")


def _check_object(value: Any, known: set[str], place: str) -> None:
    if not isinstance(value, dict):
        raise DocumentError(_("%(place)s must be an object") % {"place": place})
    if unknown := sorted(set(value) - known):
        raise DocumentError(
            _("%(place)s: unknown field %(fields)s; known: %(known)s")
            % {"place": place, "fields": ", ".join(map(repr, unknown)), "known": ", ".join(sorted(known))}
        )
    for field, kind in FIELD_TYPES.items():
        if field in value and not isinstance(value[field], kind):
            raise DocumentError(
                _("%(place)s: %(field)s must be %(kind)s, not %(value)r")
                % {"place": place, "field": field, "kind": _type_name(kind), "value": value[field]}
            )


def _type_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):  # the dates of a period: ISO 8601 text, or null
        return _("text or null")
    return {str: _("text"), bool: _("true or false"), dict: _("an object"), list: _("a list")}[kind]


def _dumper(yaml: Any) -> Any:
    class Dumper(yaml.SafeDumper):
        """Every value written out, never as an alias: ``load`` refuses aliases."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return Dumper


def _yaml() -> Any:
    # PyYAML is not a dependency: YAML is there for sites that have it installed already.
    try:
        import yaml
    except ImportError:
        raise DocumentError(
            _("YAML needs PyYAML, which is not installed (pip install PyYAML); use --format json")
        ) from None
    return yaml
