"""The CI report parsers read JUnit, coverage.py JSON, Cobertura, SARIF, results.json, metrics and
privacy files to exact counts (the fixtures, shaped like each tool's output, are in tests/cases/ci_reports;
what the readers refuse is in test_report_errors)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from carbontrack.core.gates.evidence import (
    JUnitCounts,
    read_coverage,
    read_metrics,
    read_privacy,
    read_security,
    read_tests,
    severity_of_score,
)
from tests.cases.ci_reports import (
    BANDIT,
    COBERTURA,
    CODEQL,
    COVERAGE_PY,
    GOTESTSUM,
    JEST,
    NESTED,
    PYTEST,
    SEMGREP,
    SUREFIRE,
    TRIVY,
    sarif,
)

pytestmark = pytest.mark.unit


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
