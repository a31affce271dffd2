"""The CI report readers refuse what they cannot use with a message that names the file, the key and
what was expected; JSON nested past the limit is refused by every reader; no text or JSON makes them
raise anything else; and the operator's own lenient reading of the results ConfigMap never raises."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbontrack.core.gates import evidence  # a module: pytest would collect a bare tests_from
from carbontrack.core.gates.evidence import (
    ReportError,
    read_coverage,
    read_metrics,
    read_privacy,
    read_security,
    read_tests,
)
from carbontrack.core.gates.judgement import CiResults
from tests.cases.ci_reports import (
    BANDIT,
    COBERTURA,
    COVERAGE_PY,
    NO_CODE,
    NO_CODE_COBERTURA,
    NO_CODE_PY,
    PYTEST,
    sarif,
)

pytestmark = pytest.mark.unit


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
