"""This project's own results.json shape, read two ways: strictly from a file given to `carbontrack gates
check` (`results_json`: a bad value is an error that names it), and leniently from the ConfigMap the
operator reads (`tests_from`: a bad value counts as not reported). Both give the same fields, so the CLI
and the operator judge the same evidence the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from carbontrack.core.gates.evidence.reading import ReportError, count, fraction, show
from carbontrack.core.gates.judgement import CiResults

RESULTS_FRACTIONS = ("passRate", "coverage")
SEVERITIES = ("critical", "high", "medium", "low")
"""results.json keys: passRate and coverage as fractions, finding counts by severity."""

Severity = Literal["critical", "high", "medium", "low"]

T = TypeVar("T")


def results_json(
    doc: Mapping[str, Any], source: str, allowed: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """This project's results.json object (the ConfigMap's, or a CI file), checked key by key.

    `{"passRate": 0.99, "coverage": 0.91, "security": {"critical": 0, "high": 0, "medium": 2}}`; the
    counts may also stand at the top level. Returns the fields by results.json name.
    """
    keys = allowed or (*RESULTS_FRACTIONS, "security", *SEVERITIES)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in keys:
            raise ReportError(source, key, f"only the keys {', '.join(keys)}", "an unknown key")
        if key in RESULTS_FRACTIONS:
            out[key] = fraction(value, source, key)
        elif key == "security":
            out.update(_security_counts(doc, value, source))
        else:
            out[key] = count(value, source, key)
    return out


def _security_counts(doc: Mapping[str, Any], value: Any, source: str) -> dict[str, int]:
    """The nested `security` object of counts; a count may stand here or at the top level, not both."""
    if not isinstance(value, dict):
        raise ReportError(source, "security", f"an object of counts ({', '.join(SEVERITIES)})", show(value))
    out: dict[str, int] = {}
    for sev, n in value.items():
        if sev not in SEVERITIES:
            raise ReportError(source, f"security.{sev}", f"only {', '.join(SEVERITIES)}", "an unknown key")
        if sev in doc:
            raise ReportError(source, f"security.{sev}", "each count once", "also at the top level")
        out[sev] = count(n, source, f"security.{sev}")
    return out


def _checked(check: Callable[[Any, str, str], T], value: Any, key: str) -> T | None:
    """A value that is not what the key expects (a string, a percentage) counts as not reported."""
    if value is None:
        return None
    try:
        return check(value, "results.json", key)
    except ReportError:
        return None


def tests_from(doc: Mapping[str, Any]) -> CiResults:
    """A results.json (CI output or the ConfigMap) as CiResults.

    Security counts are read from a nested `security` object when there is one, else from the top
    level (`{"passRate": 0.99, "critical": 0}` and `{"security": {"critical": 0}}` mean the same).
    A value of the wrong kind (`"0.99"`, a percentage like 97, a negative count) is treated as not
    reported, so it fails closed in staging and production instead of passing as a misread number
    or raising in the operator's handler.
    """
    sec = doc.get("security")
    if not isinstance(sec, Mapping) or not sec:
        sec = doc
    return CiResults(
        pass_rate=_checked(fraction, doc.get("passRate"), "passRate"),
        coverage=_checked(fraction, doc.get("coverage"), "coverage"),
        critical=_checked(count, sec.get("critical"), "critical"),
        high=_checked(count, sec.get("high"), "high"),
        medium=_checked(count, sec.get("medium"), "medium"),
        low=_checked(count, sec.get("low"), "low"),
    )
