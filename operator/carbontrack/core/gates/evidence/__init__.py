"""Gate evidence from the reports CI tools write: pure functions from a file's text to numbers.

The format is detected from the content, never from the file name: text starting with `<` is XML
(JUnit for tests in `junit`, Cobertura for coverage in `coverage`), anything else JSON (SARIF 2.1 in
`sarif`, coverage.py's `coverage json`, or this project's own results.json shape in `results_json`).
Whatever cannot be judged exactly as written is a `ReportError` naming the file, the key and what was
expected: a gate must never pass or fail on a misread number (`{"passRate": 97}` must not pass as
"97 >= 0.98"). Each module's docstring has its counting rules, which the README's gates section
documents.
"""

from carbontrack.core.gates.evidence.coverage import read_coverage
from carbontrack.core.gates.evidence.json_inputs import PrivacyInput, read_metrics, read_privacy
from carbontrack.core.gates.evidence.junit import JUnitCounts, junit_counts, read_tests
from carbontrack.core.gates.evidence.reading import Parsed, ReportError, count, fraction
from carbontrack.core.gates.evidence.results_json import results_json, tests_from
from carbontrack.core.gates.evidence.sarif import read_security, sarif_counts, severity_of_score

__all__ = [
    "JUnitCounts",
    "Parsed",
    "PrivacyInput",
    "ReportError",
    "count",
    "fraction",
    "junit_counts",
    "read_coverage",
    "read_metrics",
    "read_privacy",
    "read_security",
    "read_tests",
    "results_json",
    "sarif_counts",
    "severity_of_score",
    "tests_from",
]
