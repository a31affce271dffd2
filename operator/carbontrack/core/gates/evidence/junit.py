"""`--tests` files: JUnit XML as pytest, Jest, Maven Surefire and gotestsum write it, or results.json.

Counting rules (the README's gates section documents them): every `<testcase>` at any depth counts
once; with `<error>` it is errored, with `<failure>` failed, with `<skipped>` skipped (in that order of
precedence), else passed. Pass rate = passed / (total - skipped): an errored test is a test that did
not pass, a skipped one is no evidence either way. Surefire's `<flakyFailure>`/`<rerunFailure>` alone
do not fail a test that passed on a rerun. A file with no `<testcase>` falls back to the
`tests`/`failures`/`errors`/`skipped` attributes of its outermost suites. No test that ran is an error:
"0/0 passed" is not evidence.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from carbontrack.core.gates.evidence.reading import (
    Parsed,
    ReportError,
    attr_count,
    is_xml,
    json_object,
    misplaced,
    xml_root,
)
from carbontrack.core.gates.evidence.results_json import results_json


@dataclass(frozen=True)
class JUnitCounts:
    """Test cases by outcome; files add up (`+`), so several JUnit files make one pass rate."""

    passed: int = 0
    failed: int = 0
    errored: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errored + self.skipped

    def __add__(self, other: JUnitCounts) -> JUnitCounts:
        return JUnitCounts(
            self.passed + other.passed,
            self.failed + other.failed,
            self.errored + other.errored,
            self.skipped + other.skipped,
        )

    def pass_rate(self, source: str) -> float:
        """Passed over the tests that ran; no test that ran is an error, never a rate."""
        ran = self.total - self.skipped
        if ran == 0:
            raise ReportError(
                source,
                "testcase",
                "at least one test that ran",
                f"{self.total} tests, {self.skipped} skipped",
            )
        return self.passed / ran

    def describe(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.errored} errored, {self.skipped} skipped"


def _case_counts(cases: list[ET.Element]) -> JUnitCounts:
    """Each `<testcase>` by its outcome element, error before failure before skipped."""
    passed = failed = errored = skipped = 0
    for case in cases:
        if case.find("error") is not None:
            errored += 1
        elif case.find("failure") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return JUnitCounts(passed, failed, errored, skipped)


def _suite_counts(suites: list[ET.Element], source: str) -> JUnitCounts:
    """The counts the suites' attributes state, for a report without `<testcase>` elements."""
    total = JUnitCounts()
    for suite in suites:
        tests = attr_count(suite, "tests", source)
        failed = attr_count(suite, "failures", source)
        errored = attr_count(suite, "errors", source)
        skipped = attr_count(suite, "skipped", source) + attr_count(suite, "disabled", source)
        if failed + errored + skipped > tests:
            raise ReportError(
                source, f"<{suite.tag} tests>", "at least failures + errors + skipped", str(tests)
            )
        total += JUnitCounts(tests - failed - errored - skipped, failed, errored, skipped)
    return total


def junit_counts(text: str, source: str) -> JUnitCounts:
    """Count a JUnit XML report (pytest, Jest, Maven Surefire, gotestsum; flat or nested suites)."""
    root = xml_root(text, source)
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(source, f"<{root.tag}>", "JUnit XML (a <testsuites> or <testsuite> root)")
    cases = list(root.iter("testcase"))
    if cases:
        return _case_counts(cases)
    return _suite_counts([root] if root.tag == "testsuite" else root.findall("testsuite"), source)


def read_tests(text: str, source: str) -> tuple[Parsed, JUnitCounts | None]:
    """A `--tests` file: JUnit XML (counted), or results.json. Returns the counts for summing files."""
    if is_xml(text):
        counts = junit_counts(text, source)
        return Parsed("JUnit XML", {"passRate": counts.pass_rate(source)}, counts.describe()), counts
    doc = json_object(text, source, "JUnit XML or a results.json object")
    misplaced(doc, source, "--tests")
    fields = results_json(doc, source)
    return Parsed("results.json", fields, ", ".join(f"{k} {v:g}" for k, v in fields.items())), None
