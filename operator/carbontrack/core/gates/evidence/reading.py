"""What every CI-report reader shares: the error that names the file and key, the value checks, and the
detection of a format from the content (never from the file name)."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

from carbontrack.api.wire import MAX_JSON_DEPTH

_JITER_POSITION = re.compile(r"(.*) at line (\d+) column (\d+)")
"""jiter's error message: the reason, then where (pydantic_core.from_json's ValueError)."""
DEPTH_EXPECTED = f"JSON with no value inside more than {MAX_JSON_DEPTH} nested arrays or objects"
"""jiter's limit, counted as it counts: the arrays and objects around each value (a scalar, or an empty
array or object); a CI report needs about 10."""


class ReportError(ValueError):
    """An input that cannot be judged as written: names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str, got: str | None = None) -> None:
        self.source, self.key, self.expected, self.got = source, key, expected, got
        text = f"{source}: {key}: expected {expected}"
        super().__init__(text if got is None else f"{text}, got {got}")


@dataclass(frozen=True)
class Parsed:
    """Evidence read from one file: CiResults fields (results.json names) and what was found."""

    format: str
    fields: Mapping[str, float | int] = field(default_factory=dict)
    detail: str = ""


def show(value: Any) -> str:
    """A value as the user wrote it, cut short: strings quoted, objects as JSON."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(value: Any, source: str, key: str, expected: str = "a number") -> float:
    """A finite JSON number (not a bool, not a string that looks like one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        hint = " (write it without quotes)" if isinstance(value, str) and _numeric(value) else ""
        raise ReportError(source, key, expected + hint, show(value))
    return float(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fraction(value: Any, source: str, key: str) -> float:
    """A rate between 0 and 1; a percentage is refused with the fraction it probably meant."""
    x = number(value, source, key, "a fraction between 0 and 1")
    if 1 < x <= 100:
        raise ReportError(
            source, key, f"a fraction between 0 and 1 ({x:g} looks like a percentage: write {x / 100:g})"
        )
    if not 0 <= x <= 1:
        raise ReportError(source, key, "a fraction between 0 and 1", show(value))
    return x


def count(value: Any, source: str, key: str) -> int:
    """A whole, non-negative number of findings or tests."""
    x = number(value, source, key, "a whole number >= 0")
    if x < 0 or not x.is_integer():
        raise ReportError(source, key, "a whole number >= 0", show(value))
    return int(x)


def attr_count(element: ET.Element, name: str, source: str) -> int:
    """A whole, non-negative XML attribute (0 when absent)."""
    raw = element.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        raise ReportError(source, f"<{element.tag} {name}>", "a whole number >= 0", show(raw)) from None
    return count(value, source, f"<{element.tag} {name}>")


def _json(text: str, source: str, what: str) -> Any:
    """The file's JSON value, parsed by jiter, whose recursion is bounded: nesting past MAX_JSON_DEPTH
    is a ReportError, never a RecursionError (Python's json recurses once per level)."""
    if not text.strip():
        raise ReportError(source, "(file)", what, "an empty file")
    try:
        return from_json(text, allow_inf_nan=True)  # NaN and 1e400 parse; number() refuses them by key
    except ValueError as exc:
        raise _refusal(str(exc), text, source, what) from None


def _refusal(reason: str, text: str, source: str, what: str) -> ReportError:
    """Why jiter refused `text`: too deep, else Python's json's wording of the syntax error where it
    finds one (`Expecting value`), else jiter's (a lone surrogate escape, a 5000-digit integer)."""
    found = _JITER_POSITION.fullmatch(reason)
    key = f"line {found[2]} column {found[3]}" if found else "(file)"
    reason = found[1] if found else reason
    if reason == "recursion limit exceeded":
        return ReportError(source, key, DEPTH_EXPECTED, "deeper nesting")
    try:
        json.loads(text)  # for its wording only: its RecursionError is caught below
    except json.JSONDecodeError as exc:
        return ReportError(source, f"line {exc.lineno} column {exc.colno}", what, exc.msg)
    except (ValueError, RecursionError):
        pass
    return ReportError(source, key, what, reason)


def json_object(text: str, source: str, what: str) -> dict[str, Any]:
    """The file's one JSON object; `what` says what was expected in its place."""
    doc = _json(text, source, what)
    if not isinstance(doc, dict):
        raise ReportError(source, "(top level)", what, show(doc))
    return doc


def xml_root(text: str, source: str) -> ET.Element:
    """The root element of an XML report."""
    # expat expands internal entities; CI reports never need a DTD, so none is accepted (no entity bombs)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ReportError(source, "<!DOCTYPE>", "XML without a document type declaration")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(": line ")[0]  # the position is named once, as the key
        raise ReportError(source, f"line {line} column {column + 1}", "well-formed XML", reason) from None


def is_xml(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def is_sarif(doc: Mapping[str, Any]) -> bool:
    return "runs" in doc and ("version" in doc or "sarif" in str(doc.get("$schema", "")).lower())


def is_coverage_py(doc: Mapping[str, Any]) -> bool:
    return "totals" in doc and "meta" in doc


def misplaced(doc: Mapping[str, Any], source: str, flag: str) -> None:
    """A report given to the wrong flag: say which flag reads it."""
    if flag != "--security" and is_sarif(doc):
        raise ReportError(source, "runs", f"{flag} input, not SARIF (give SARIF with --security)")
    if flag != "--coverage" and is_coverage_py(doc):
        raise ReportError(source, "totals", f"{flag} input, not coverage.py JSON (give it with --coverage)")
