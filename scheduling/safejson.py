"""JSON from people and programs we do not control, parsed within limits.

The standard parser trusts its input: 100,000 nested brackets raise RecursionError, a 5,000-digit
integer raises a bare ValueError (Python's int-to-text limit), and ``NaN``/``Infinity`` are
accepted although JSON has no such values. Each of those reached the API and the admin as a
server error. Here the text is measured before it is parsed, and numbers are parsed strictly.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.utils.translation import gettext as _

MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 20  # every 64-bit integer, and nothing int() or the databases choke on
# Strings removed before brackets are counted: a "[" inside a string is not nesting.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class JsonInputError(ValueError):
    """JSON refused; ``code`` is a stable identifier, ``status`` the HTTP status that fits."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def loads(text: str | bytes, *, max_length: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` as JSON, or raise JsonInputError saying what is wrong with it."""
    if len(text) > max_length:
        raise JsonInputError(
            "too_large",
            _("The JSON is %(length)s bytes long; the limit is %(max)s")
            % {"length": len(text), "max": max_length},
            status=413,
        )
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise JsonInputError(
                "invalid_json", _("The JSON is not UTF-8: %(error)s") % {"error": exc}
            ) from None
    if depth(text) > max_depth:
        raise JsonInputError(
            "too_deep", _("The JSON is nested more than %(max)s levels deep") % {"max": max_depth}
        )
    try:
        return json.loads(text, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except JsonInputError:
        raise
    except ValueError as exc:  # JSONDecodeError, and whatever the number hooks let through
        raise JsonInputError(
            "invalid_json", _("The body is not valid JSON: %(error)s") % {"error": exc}
        ) from None


def depth(text: str) -> int:
    """How deeply brackets nest in ``text`` (an over-estimate for text that is not JSON)."""
    level = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        level = level + 1 if bracket in "[{" else level - 1
        deepest = max(deepest, level)
    return deepest


def _constant(name: str) -> Any:
    raise JsonInputError("invalid_number", _("%(name)s is not a JSON number") % {"name": name})


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise JsonInputError(
            "invalid_number",
            _("An integer of %(length)s digits is too long; the limit is %(max)s")
            % {"length": len(digits.lstrip("-")), "max": MAX_INTEGER_DIGITS},
        )
    return int(digits)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError("invalid_number", _("%(number)s is too large a number") % {"number": text[:40]})
    return value
