"""CI reports shaped like what each tool writes (element and key names, nesting, attributes), cut down
to a few cases each: JUnit from pytest, Jest, Maven Surefire and gotestsum; coverage.py JSON and
Cobertura; SARIF from Bandit, Trivy, CodeQL and Semgrep."""

from __future__ import annotations

import json
from typing import Any

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
