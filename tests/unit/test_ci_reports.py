"""The CI report parsers: JUnit, coverage.py JSON, Cobertura, SARIF, results.json; exact counts and errors.

The fixtures are shaped like what each tool writes (element and key names, nesting, attributes),
cut down to a few cases each.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbontrack.core.gates import evidence  # a module: pytest would collect a bare tests_from
from carbontrack.core.gates.evidence import (
    JUnitCounts,
    ReportError,
    read_coverage,
    read_metrics,
    read_privacy,
    read_security,
    read_tests,
    severity_of_score,
)
from carbontrack.core.gates.judgement import CiResults

pytestmark = pytest.mark.unit

PYTEST = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="1" failures="1" skipped="1" tests="5" time="0.051" timestamp="2026-12-01T21:00:00" hostname="ci">
<testcase classname="test_m" name="test_a" time="0.001" />
<testcase classname="test_m" name="test_b" time="0.001"><failure message="assert 1 == 2">def test_b():
&gt;       assert 1 == 2</failure></testcase>
<testcase classname="test_m" name="test_c" time="0.000"><skipped type="pytest.skip" message="not here">
test_m.py:9: not here</skipped></testcase>
<testcase classname="test_m" name="test_d" time="0.001"><error message="failed on setup with &quot;E&quot;">
fixture error</error></testcase>
<testcase classname="test_m" name="test_e" time="0.001" /></testsuite></testsuites>"""

JEST = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="4" failures="1" errors="0" time="1.204">
  <testsuite name="sum" errors="0" failures="1" skipped="1" timestamp="2026-12-01T21:00:00" time="0.5" tests="4">
    <testcase classname="sum adds" name="sum adds" time="0.002"></testcase>
    <testcase classname="sum adds zero" name="sum adds zero" time="0.001"></testcase>
    <testcase classname="sum subtracts" name="sum subtracts" time="0.001">
      <failure>Error: expect(received).toBe(expected) // Object.is equality</failure>
    </testcase>
    <testcase classname="sum todo" name="sum todo" time="0"><skipped/></testcase>
  </testsuite>
</testsuites>"""

SUREFIRE = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="3.0.2"
  name="com.example.AppTest" time="0.112" tests="4" errors="0" skipped="1" failures="1">
  <properties><property name="java.version" value="21.0.5"/></properties>
  <testcase name="passes" classname="com.example.AppTest" time="0.01"/>
  <testcase name="flaky" classname="com.example.AppTest" time="0.02">
    <flakyFailure message="expected: &lt;1&gt;" type="org.opentest4j.AssertionFailedError"/>
  </testcase>
  <testcase name="fails" classname="com.example.AppTest" time="0.01">
    <failure message="expected: &lt;2&gt;" type="org.opentest4j.AssertionFailedError">trace</failure>
    <rerunFailure message="expected: &lt;2&gt;" type="org.opentest4j.AssertionFailedError"/>
  </testcase>
  <testcase name="ignored" classname="com.example.AppTest" time="0"><skipped message="@Disabled"/></testcase>
</testsuite>"""

GOTESTSUM = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1" errors="0" time="0.012">
  <testsuite tests="2" failures="1" time="0.005" name="example.com/pkg/a" timestamp="2026-12-01T21:00:00Z">
    <properties><property name="go.version" value="go1.23.4 linux/amd64"></property></properties>
    <testcase classname="example.com/pkg/a" name="TestOK" time="0.000"></testcase>
    <testcase classname="example.com/pkg/a" name="TestBad" time="0.000">
      <failure message="Failed" type="">=== RUN   TestBad
    a_test.go:9: boom
--- FAIL: TestBad (0.00s)</failure>
    </testcase>
  </testsuite>
  <testsuite tests="1" failures="0" time="0.001" name="example.com/pkg/b" timestamp="2026-12-01T21:00:00Z">
    <testcase classname="example.com/pkg/b" name="TestLater" time="0.000"><skipped message="=== RUN"></skipped></testcase>
  </testsuite>
</testsuites>"""

NESTED = """<testsuites tests="99" failures="99">
  <testsuite name="outer" tests="99" failures="99">
    <testsuite name="inner"><testcase name="a"/><testcase name="b"/></testsuite>
    <testsuite name="inner2"><testsuite name="deepest"><testcase name="c"><failure/></testcase></testsuite></testsuite>
  </testsuite>
</testsuites>"""


@pytest.mark.parametrize(
    ("name", "text", "counts", "pass_rate"),
    [
        ("pytest", PYTEST, JUnitCounts(passed=2, failed=1, errored=1, skipped=1), 0.5),
        ("jest", JEST, JUnitCounts(passed=2, failed=1, errored=0, skipped=1), 2 / 3),
        # a flaky test that passed on a rerun passed; a failure with reruns failed
        ("surefire", SUREFIRE, JUnitCounts(passed=2, failed=1, errored=0, skipped=1), 2 / 3),
        ("gotestsum", GOTESTSUM, JUnitCounts(passed=1, failed=1, errored=0, skipped=1), 0.5),
        # every testcase once, at any depth; the suites' own attributes are not added again
        ("nested", NESTED, JUnitCounts(passed=2, failed=1, errored=0, skipped=0), 2 / 3),
        # no testcase elements: the outermost suites' attributes
        (
            "attributes-only",
            '<testsuites tests="12"><testsuite tests="10" failures="1" errors="1" skipped="2"/>'
            '<testsuite tests="2" disabled="1"/></testsuites>',
            JUnitCounts(passed=7, failed=1, errored=1, skipped=3),
            7 / 9,
        ),
    ],
)
def test_junit_reports_are_counted_exactly(
    name: str, text: str, counts: JUnitCounts, pass_rate: float
) -> None:
    parsed, got = read_tests(text, f"{name}.xml")
    assert got == counts
    assert parsed.format == "JUnit XML"
    assert parsed.fields == {"passRate": pass_rate}
    assert parsed.detail == counts.describe()


def test_results_json_is_still_read_for_tests() -> None:
    parsed, counts = read_tests('{"passRate": 0.99, "coverage": 0.91, "security": {"critical": 0}}', "t.json")
    assert counts is None
    assert parsed.fields == {"passRate": 0.99, "coverage": 0.91, "critical": 0}


COVERAGE_PY = {
    "meta": {"format": 3, "version": "7.6.1", "timestamp": "2026-12-01T21:00:00", "branch_coverage": False,
             "show_contexts": False},
    "files": {"m.py": {"summary": {"covered_lines": 9, "num_statements": 12, "percent_covered": 75.0}}},
    "totals": {"covered_lines": 9, "num_statements": 12, "percent_covered": 75.0, "percent_covered_display": "75",
               "missing_lines": 3, "excluded_lines": 0},
}  # fmt: skip

COBERTURA = """<?xml version="1.0" ?>
<coverage version="7.6.1" timestamp="1764622800000" lines-valid="12" lines-covered="9" line-rate="0.75"
  branches-covered="0" branches-valid="0" branch-rate="0" complexity="0">
  <sources><source>/src</source></sources>
  <packages><package name="." line-rate="0.75" branch-rate="0" complexity="0"><classes/></package></packages>
</coverage>"""


NO_CODE_PY = {
    **COVERAGE_PY,
    "files": {"empty.py": {"summary": {"covered_lines": 0, "num_statements": 0, "percent_covered": 100.0}}},
    "totals": {"covered_lines": 0, "num_statements": 0, "percent_covered": 100.0, "percent_covered_display": "100",
               "missing_lines": 0, "excluded_lines": 0},
}  # fmt: skip
"""What `coverage json` writes when only empty modules were measured: 100 % of nothing."""

NO_CODE_COBERTURA = """<?xml version="1.0" ?>
<coverage version="7.18.0" timestamp="1764622800000" lines-valid="0" lines-covered="0" line-rate="1"
  branches-covered="0" branches-valid="0" branch-rate="0" complexity="0">
  <sources><source>/src</source></sources><packages/>
</coverage>"""

NO_CODE = "(a report over no code is no data, not 100% coverage), got 0"


@pytest.mark.parametrize(
    ("text", "fmt", "coverage", "detail"),
    [
        (json.dumps(COVERAGE_PY), "coverage.py JSON", 0.75, "75% covered"),
        (COBERTURA, "Cobertura XML", 0.75, "9/12 lines"),
        ('<coverage line-rate="0.8333" branch-rate="0.5"><packages/></coverage>', "Cobertura XML", 0.8333,
         "line-rate 0.8333"),
        ('{"coverage": 0.91}', "results.json", 0.91, "coverage 0.91"),
    ],
)  # fmt: skip
def test_coverage_reports_give_a_fraction(text: str, fmt: str, coverage: float, detail: str) -> None:
    parsed = read_coverage(text, "cov")
    assert (parsed.format, dict(parsed.fields), parsed.detail) == (fmt, {"coverage": coverage}, detail)


def sarif(*runs: dict[str, Any]) -> str:
    return json.dumps({"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
                       "runs": list(runs)})  # fmt: skip


BANDIT = {
    "tool": {"driver": {"name": "Bandit", "rules": [{"id": "B101", "name": "assert_used"},
                                                     {"id": "B602", "name": "subprocess_popen_with_shell"},
                                                     {"id": "B105", "name": "hardcoded_password_string"}]}},
    "results": [
        {"ruleId": "B101", "ruleIndex": 0, "level": "note", "message": {"text": "Use of assert detected."},
         "properties": {"issue_severity": "LOW", "issue_confidence": "HIGH"}},
        {"ruleId": "B101", "ruleIndex": 0, "level": "note", "properties": {"issue_severity": "LOW"}},
        {"ruleId": "B602", "ruleIndex": 1, "level": "error", "properties": {"issue_severity": "HIGH"}},
        {"ruleId": "B105", "ruleIndex": 2, "level": "warning", "properties": {"issue_severity": "MEDIUM"}},
    ],
}  # fmt: skip

TRIVY = {
    "tool": {"driver": {"name": "Trivy", "rules": [
        {"id": "CVE-2024-0001", "properties": {"security-severity": "9.8", "tags": ["vulnerability", "CRITICAL"]},
         "defaultConfiguration": {"level": "error"}},
        {"id": "CVE-2024-0002", "properties": {"security-severity": "7.5"}, "defaultConfiguration": {"level": "error"}},
        {"id": "CVE-2024-0003", "properties": {"security-severity": "5.3"},
         "defaultConfiguration": {"level": "warning"}},
        {"id": "CVE-2024-0004", "properties": {"security-severity": "2.0"}, "defaultConfiguration": {"level": "note"}},
    ]}},
    "results": [
        {"ruleId": "CVE-2024-0001", "ruleIndex": 0, "level": "error"},
        {"ruleId": "CVE-2024-0002", "ruleIndex": 1, "level": "error"},
        {"ruleId": "CVE-2024-0003", "ruleIndex": 2, "level": "warning"},
        {"ruleId": "CVE-2024-0004", "ruleIndex": 3, "level": "note"},
    ],
}  # fmt: skip

CODEQL = {
    "tool": {"driver": {"name": "CodeQL", "rules": [
        {"id": "py/sql-injection", "defaultConfiguration": {"level": "error"},
         "properties": {"security-severity": "8.8", "problem.severity": "error"}},
        {"id": "py/unused-import", "defaultConfiguration": {"level": "note"}},
        {"id": "py/clear-text-logging", "defaultConfiguration": {"level": "error"},
         "properties": {"security-severity": "7.5"}},
    ]}},
    "results": [
        {"ruleId": "py/sql-injection", "rule": {"id": "py/sql-injection", "index": 0}},  # no level: the rule's
        {"ruleId": "py/unused-import", "rule": {"id": "py/unused-import", "index": 1}},
        # suppressed in source, gone since the baseline, or not a failure: not counted
        {"ruleId": "py/sql-injection", "suppressions": [{"kind": "inSource"}]},
        {"ruleId": "py/sql-injection", "baselineState": "absent"},
        {"ruleId": "py/sql-injection", "kind": "pass"},
        # a suppression still under review does not hide the finding
        {"ruleId": "py/clear-text-logging", "suppressions": [{"kind": "external", "status": "underReview"}]},
    ],
}  # fmt: skip

SEMGREP = {
    "tool": {"driver": {"name": "Semgrep OSS", "rules": [
        {"id": "python.lang.security.audit.eval-detected", "defaultConfiguration": {"level": "warning"}},
        {"id": "python.flask.security.xss", "defaultConfiguration": {"level": "error"},
         "properties": {"security-severity": "0.0"}},
    ]}},
    "results": [
        {"ruleId": "python.lang.security.audit.eval-detected", "level": "warning"},
        {"ruleId": "python.lang.security.audit.eval-detected", "level": "none"},
        {"ruleId": "python.flask.security.xss", "level": "error"},  # score 0.0: not a security finding
        {"ruleId": "python.lang.security.audit.eval-detected", "level": "note",
         "properties": {"security-severity": "9.1"}},  # the result's own score wins over its level
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("run", "counts", "tool"),
    [
        (BANDIT, {"critical": 0, "high": 1, "medium": 1, "low": 2}, "Bandit"),
        (TRIVY, {"critical": 1, "high": 1, "medium": 1, "low": 1}, "Trivy"),
        (CODEQL, {"critical": 0, "high": 2, "medium": 0, "low": 1}, "CodeQL"),
        (SEMGREP, {"critical": 1, "high": 0, "medium": 1, "low": 0}, "Semgrep OSS"),
        ({"tool": {"driver": {"name": "clean"}}, "results": []}, {"critical": 0, "high": 0, "medium": 0, "low": 0},
         "clean"),
    ],
)  # fmt: skip
def test_sarif_findings_are_counted_by_severity(
    run: dict[str, Any], counts: dict[str, int], tool: str
) -> None:
    parsed = read_security(sarif(run), "scan.sarif")
    assert parsed.format == "SARIF 2.1"
    assert dict(parsed.fields) == counts
    assert parsed.detail.endswith(f"(from {tool})")


def test_sarif_runs_add_up() -> None:
    parsed = read_security(sarif(BANDIT, TRIVY), "scan.sarif")
    assert dict(parsed.fields) == {"critical": 1, "high": 2, "medium": 2, "low": 3}
    assert parsed.detail == "1 critical, 2 high, 2 medium, 3 low (from Bandit, Trivy)"


@pytest.mark.parametrize(
    ("score", "severity"),
    [(10.0, "critical"), (9.0, "critical"), (8.9, "high"), (7.0, "high"), (6.9, "medium"), (4.0, "medium"),
     (3.9, "low"), (0.1, "low"), (0.0, None)],
)  # fmt: skip
def test_security_severity_scores_map_as_github_documents(score: float, severity: str | None) -> None:
    assert severity_of_score(score) == severity


def test_security_counts_json_is_still_read() -> None:
    parsed = read_security('{"critical": 0, "high": 1, "medium": 2, "low": 30}', "s.json")
    assert dict(parsed.fields) == {"critical": 0, "high": 1, "medium": 2, "low": 30}


def test_metrics_and_privacy_files() -> None:
    assert read_metrics('{"eval_accuracy": 0.91, "latency_ms": 105}', "m.json") == {
        "eval_accuracy": 0.91, "latency_ms": 105.0,
    }  # fmt: skip
    p = read_privacy(
        '{"epsilonBudget": 8, "noiseMultiplier": 1.1, "sampleRate": 0.01, "steps": 20000}', "p.json"
    )
    assert (p.epsilon_budget, p.noise_multiplier, p.sample_rate, p.steps, p.delta, p.accountant) == (
        8.0, 1.1, 0.01, 20000, 1e-5, "rdp",
    )  # fmt: skip


ERRORS: list[tuple[str, Any, str, str]] = [
    # (reader, text, file, exact message)
    ("tests", '{"passRate": 97}', "t.json",
     "t.json: passRate: expected a fraction between 0 and 1 (97 looks like a percentage: write 0.97)"),
    ("tests", '{"passRate": "0.97"}', "t.json",
     't.json: passRate: expected a fraction between 0 and 1 (write it without quotes), got "0.97"'),
    ("tests", '{"passRate": true}', "t.json", "t.json: passRate: expected a fraction between 0 and 1, got true"),
    ("tests", '{"passRate": -0.5}', "t.json", "t.json: passRate: expected a fraction between 0 and 1, got -0.5"),
    ("tests", '{"total_tests": 1000, "passed_tests": 970, "coverage_percent": 92}', "t.json",
     "t.json: total_tests: expected only the keys passRate, coverage, security, critical, high, medium, low, "
     "got an unknown key"),
    ("tests", '{"passRate": {"value": 0.99}}', "t.json",
     "t.json: passRate: expected a fraction between 0 and 1, got an object"),
    ("tests", '{"security": {"critical": 0}, "critical": 1}', "t.json",
     "t.json: security.critical: expected each count once, got also at the top level"),
    ("tests", '{"security": {"blocker": 1}}', "t.json",
     "t.json: security.blocker: expected only critical, high, medium, low, got an unknown key"),
    ("tests", "[0.99]", "t.json", "t.json: (top level): expected JUnit XML or a results.json object, got a list"),
    ("tests", "", "t.json", "t.json: (file): expected JUnit XML or a results.json object, got an empty file"),
    ("tests", "{passRate: 1}", "t.json",
     "t.json: line 1 column 2: expected JUnit XML or a results.json object, "
     "got Expecting property name enclosed in double quotes"),
    ("tests", "<testsuites><testsuite></testsuites>", "j.xml",
     "j.xml: line 1 column 26: expected well-formed XML, got mismatched tag"),
    ("tests", '<testsuites><testsuite tests="0"/></testsuites>', "j.xml",
     "j.xml: testcase: expected at least one test that ran, got 0 tests, 0 skipped"),
    ("tests", '<testsuite><testcase><skipped/></testcase></testsuite>', "j.xml",
     "j.xml: testcase: expected at least one test that ran, got 1 tests, 1 skipped"),
    ("tests", '<testsuite tests="many"/>', "j.xml",
     'j.xml: <testsuite tests>: expected a whole number >= 0, got "many"'),
    ("tests", '<testsuite tests="1" failures="2"/>', "j.xml",
     "j.xml: <testsuite tests>: expected at least failures + errors + skipped, got 1"),
    ("tests", COBERTURA, "cov.xml", "cov.xml: <coverage>: expected JUnit XML (a <testsuites> or <testsuite> root)"),
    ("tests", '<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite>&a;</testsuite>', "j.xml",
     "j.xml: <!DOCTYPE>: expected XML without a document type declaration"),
    ("tests", sarif(BANDIT), "s.sarif", "s.sarif: runs: expected --tests input, not SARIF (give SARIF with --security)"),
    ("tests", json.dumps(COVERAGE_PY), "c.json",
     "c.json: totals: expected --tests input, not coverage.py JSON (give it with --coverage)"),
    ("coverage", '{"coverage": 92}', "c.json",
     "c.json: coverage: expected a fraction between 0 and 1 (92 looks like a percentage: write 0.92)"),
    ("coverage", '{"passRate": 0.9}', "c.json", "c.json: passRate: expected only the keys coverage, got an unknown key"),
    ("coverage", "{}", "c.json", "c.json: coverage: expected the key coverage, got an empty object"),
    ("coverage", json.dumps({**COVERAGE_PY, "totals": {"percent_covered": "75"}}), "c.json",
     'c.json: totals.percent_covered: expected a percentage from 0 to 100 (write it without quotes), got "75"'),
    ("coverage", json.dumps({**COVERAGE_PY, "totals": {"covered_lines": 1}}), "c.json",
     "c.json: totals.percent_covered: expected coverage.py's total percentage, got no such key"),
    ("coverage", '<coverage lines-valid="10" lines-covered="11"/>', "c.xml",
     "c.xml: <coverage lines-covered>: expected at most lines-valid (10), got 11"),
    ("coverage", '<coverage line-rate="83"/>', "c.xml",
     "c.xml: <coverage line-rate>: expected a fraction between 0 and 1 (83 looks like a percentage: write 0.83)"),
    ("coverage", "<coverage/>", "c.xml",
     "c.xml: <coverage line-rate>: expected a line rate between 0 and 1, got no such attribute"),
    ("coverage", PYTEST, "j.xml", "j.xml: <testsuites>: expected Cobertura XML (a <coverage> root)"),
    ("coverage", json.dumps(NO_CODE_PY), "c.json",
     f"c.json: totals.num_statements: expected at least one statement measured {NO_CODE}"),
    ("coverage", NO_CODE_COBERTURA, "c.xml",
     f"c.xml: <coverage lines-valid>: expected at least one line measured {NO_CODE}"),
    ("coverage", '<coverage lines-valid="0" line-rate="0.9"/>', "c.xml",
     f"c.xml: <coverage lines-valid>: expected at least one line measured {NO_CODE}"),
    ("coverage", json.dumps({**COVERAGE_PY, "totals": {"percent_covered": 100.0, "num_statements": "0"}}), "c.json",
     'c.json: totals.num_statements: expected a whole number >= 0 (write it without quotes), got "0"'),
    ("security", '{"critical": "0"}', "s.json",
     's.json: critical: expected a whole number >= 0 (write it without quotes), got "0"'),
    ("security", '{"high": 1.5}', "s.json", "s.json: high: expected a whole number >= 0, got 1.5"),
    ("security", '{"version": "2.0.0", "runs": []}', "s.sarif", 's.sarif: version: expected SARIF "2.1.0", got "2.0.0"'),
    ("security", sarif({"tool": {"driver": {"name": "x"}}}), "s.sarif",
     "s.sarif: runs[0].results: expected a list of results (the scan did not finish?), got null"),
    ("security", sarif({"tool": {"driver": {"name": "x"}}, "results": [{"level": "fatal"}]}), "s.sarif",
     's.sarif: runs[0].results[0].level: expected error, warning, note or none, got "fatal"'),
    ("security", sarif({"tool": {"driver": {"name": "x"}},
                        "results": [{"properties": {"security-severity": "high"}}]}), "s.sarif",
     's.sarif: runs[0].results[0].properties.security-severity: expected a score from 0.0 to 10.0, got "high"'),
    ("security", sarif({"tool": {"driver": {"name": "x", "rules": [{"id": "r", "properties": {"security-severity": 11}}]}},
                        "results": [{"ruleId": "r"}]}), "s.sarif",
     "s.sarif: runs[0].results[0] rule.properties.security-severity: expected a score from 0.0 to 10.0, got 11"),
    ("security", "<x/>", "s.xml", "s.xml: (file): expected SARIF 2.1 JSON or a JSON object of counts, got XML"),
    ("metrics", '{"eval": {"accuracy": 0.9}}', "m.json",
     "m.json: eval: expected a number (metrics are one flat object of name: number), got an object"),
    ("metrics", '{"eval_accuracy": "0.9"}', "m.json",
     'm.json: eval_accuracy: expected a number (metrics are one flat object of name: number) '
     '(write it without quotes), got "0.9"'),
    ("metrics", '{"eval_accuracy": NaN}', "m.json",
     "m.json: eval_accuracy: expected a number (metrics are one flat object of name: number), got NaN"),
    ("metrics", '{"eval_accuracy": ' + "9" * 5000 + "}", "m.json",
     "m.json: line 1 column 4320: expected one JSON object of name: number (e.g. {\"eval_accuracy\": 0.91}), "
     "got number out of range"),
    ("privacy", '{"epsilon": 8}', "p.json",
     "p.json: epsilon: expected only the keys epsilonBudget, noiseMultiplier, sampleRate, steps, delta, accountant, "
     "claimedEpsilon, got an unknown key"),
    ("privacy", '{"noiseMultiplier": 1.1}', "p.json",
     "p.json: epsilonBudget: expected the privacy budget (a number > 0), got no such key"),
    ("privacy", '{"epsilonBudget": 8, "noiseMultiplier": 1.1}', "p.json",
     "p.json: sampleRate: expected noiseMultiplier and sampleRate together"),
    ("privacy", '{"epsilonBudget": 8, "accountant": "gdp"}', "p.json", 'p.json: accountant: expected rdp or pld, got "gdp"'),
    ("privacy", '{"epsilonBudget": 8, "steps": 0}', "p.json", "p.json: steps: expected a whole number >= 1, got 0"),
]  # fmt: skip

READERS = {
    "tests": lambda text, src: read_tests(text, src),
    "coverage": read_coverage,
    "security": read_security,
    "metrics": read_metrics,
    "privacy": read_privacy,
}


@pytest.mark.parametrize(("reader", "text", "source", "message"), ERRORS, ids=[e[3][:60] for e in ERRORS])
def test_unusable_input_names_the_file_the_key_and_what_was_expected(
    reader: str, text: str, source: str, message: str
) -> None:
    with pytest.raises(ReportError) as err:
        READERS[reader](text, source)
    assert str(err.value) == message


DEEP = "[" * 100_000
"""What a careless or hostile CI step can write: Python's json raises RecursionError on it."""


@pytest.mark.parametrize("reader", sorted(READERS))
def test_json_nested_past_the_limit_is_refused_by_every_reader(reader: str) -> None:
    with pytest.raises(ReportError) as err:
        READERS[reader](DEEP, "deep.json")
    assert str(err.value) == (
        "deep.json: line 1 column 202: expected JSON with no value inside more than 200 nested arrays or "
        "objects, got deeper nesting"
    )


def nested(depth: int) -> str:
    """A metrics file whose number sits inside `depth` objects (the 201st starts at column 1201)."""
    return '{"a": ' * (depth - 1) + '{"eval_accuracy": 0.9' + "}" * depth


def test_json_nesting_is_counted_as_the_limit_says() -> None:
    for depth in (2, 200):
        with pytest.raises(ReportError, match=r"^m.json: a: expected a number .*, got an object$"):
            read_metrics(nested(depth), "m.json")  # parsed, then refused as not flat
    assert read_metrics(nested(1), "m.json") == {"eval_accuracy": 0.9}
    with pytest.raises(ReportError, match=r"^m.json: line 1 column 1219: expected JSON with no value inside"):
        read_metrics(nested(201), "m.json")


@given(st.text(max_size=200))
def test_any_text_is_either_read_or_refused_with_a_report_error(text: str) -> None:
    for reader in READERS.values():
        with contextlib.suppress(ReportError):
            reader(text, "f")


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=10))  # fmt: skip
def test_any_json_is_either_read_or_refused_with_a_report_error(doc: Any) -> None:
    text = json.dumps(doc)
    for reader in READERS.values():
        with contextlib.suppress(ReportError):
            reader(text, "f")
    if isinstance(doc, dict):
        evidence.tests_from(doc)  # the operator's lenient reading never raises


def test_operator_reads_invalid_values_in_the_config_map_as_not_reported() -> None:
    doc = {
        "passRate": 97,
        "coverage": "0.9",
        "security": {"critical": -1, "high": 0, "medium": 2.5, "low": 4},
    }
    assert evidence.tests_from(doc) == CiResults(
        pass_rate=None, coverage=None, critical=None, high=0, medium=None, low=4
    )
    assert evidence.tests_from({"passRate": 0.99, "critical": 0}) == CiResults(pass_rate=0.99, critical=0)
