"""Test and security-scan evidence as one typed value, from the JSON object CI writes.

The same object arrives two ways: the `results.json` of the ConfigMap named by
spec.gates.tests.fromConfigMap (read by the operator), and the files given to `carbontrack gates
check` (read by the CLI, which refuses a bad value outright with `ci_reports.results_json`). Both
convert it here, so the two judge the same evidence the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from carbontrack.core.gates.ci_reports import ReportError, count, fraction
from carbontrack.core.gates.judgement import TestResults

T = TypeVar("T")


def _checked(check: Callable[[Any, str, str], T], value: Any, key: str) -> T | None:
    """A value that is not what the key expects (a string, a percentage) counts as not reported."""
    if value is None:
        return None
    try:
        return check(value, "results.json", key)
    except ReportError:
        return None


def tests_from(doc: Mapping[str, Any]) -> TestResults:
    """A results.json (CI output or the ConfigMap) as TestResults.

    Security counts are read from a nested `security` object when there is one, else from the top
    level (`{"passRate": 0.99, "critical": 0}` and `{"security": {"critical": 0}}` mean the same).
    A value of the wrong kind (`"0.99"`, a percentage like 97, a negative count) is treated as not
    reported, so it fails closed in staging and production instead of passing as a misread number
    or raising in the operator's handler.
    """
    sec = doc.get("security")
    if not isinstance(sec, Mapping) or not sec:
        sec = doc
    return TestResults(
        pass_rate=_checked(fraction, doc.get("passRate"), "passRate"),
        coverage=_checked(fraction, doc.get("coverage"), "coverage"),
        critical=_checked(count, sec.get("critical"), "critical"),
        high=_checked(count, sec.get("high"), "high"),
        medium=_checked(count, sec.get("medium"), "medium"),
        low=_checked(count, sec.get("low"), "low"),
    )
