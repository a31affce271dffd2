"""The reports CI tools write, read as gate evidence: pure functions from a file's text to numbers.

The format is detected from the content, never from the file name: text starting with `<` is XML
(JUnit for tests, Cobertura for coverage), anything else JSON (SARIF 2.1, coverage.py's `coverage
json`, or this project's own results.json shape). Whatever cannot be judged exactly as written is a
`ReportError` naming the file, the key and what was expected: a gate must never pass or fail on a
misread number (`{"passRate": 97}` once passed production as "97 >= 0.98").

Counting rules, documented in the README's gates section:
- JUnit: every `<testcase>` at any depth counts once; with `<error>` it is errored, with `<failure>`
  failed, with `<skipped>` skipped (in that order of precedence), else passed. Pass rate = passed /
  (total - skipped): an errored test is a test that did not pass, a skipped one is no evidence either
  way. Surefire's `<flakyFailure>`/`<rerunFailure>` alone do not fail a test that passed on a rerun.
  A file with no `<testcase>` falls back to the `tests`/`failures`/`errors`/`skipped` attributes of
  its outermost suites. No test that ran is an error: "0/0 passed" is not evidence.
- SARIF: results of `kind` "fail" (the default), not suppressed and not `baselineState: absent`. A
  `security-severity` score (on the result's or its rule's properties, as GitHub code scanning reads
  it) maps >= 9.0 critical, >= 7.0 high, >= 4.0 medium, > 0 low; without one, the `level` (the
  result's, else the rule's defaultConfiguration, else SARIF's default "warning") maps error -> high,
  warning -> medium, note -> low, none -> not counted.
- Coverage: coverage.py JSON `totals.percent_covered` / 100 (the figure `coverage report` prints,
  branches included when measured); Cobertura `lines-covered / lines-valid` (else `line-rate`).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

RESULTS_FRACTIONS = ("passRate", "coverage")
SEVERITIES = ("critical", "high", "medium", "low")
"""results.json keys: passRate and coverage as fractions, finding counts by severity."""

Severity = Literal["critical", "high", "medium", "low"]


class ReportError(ValueError):
    """An input that cannot be judged as written: names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str, got: str | None = None) -> None:
        self.source, self.key, self.expected, self.got = source, key, expected, got
        text = f"{source}: {key}: expected {expected}"
        super().__init__(text if got is None else f"{text}, got {got}")


@dataclass(frozen=True)
class Parsed:
    """Evidence read from one file: TestResults fields (results.json names) and what was found."""

    format: str
    fields: Mapping[str, float | int] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class PrivacyInput:
    """The DP parameters and budget of a `--privacy` file."""

    epsilon_budget: float
    delta: float = 1e-5
    accountant: Literal["rdp", "pld"] = "rdp"
    steps: int = 1
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    claimed_epsilon: float | None = None


def _show(value: Any) -> str:
    """A value as the user wrote it, cut short: strings quoted, objects as JSON."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, source: str, key: str, expected: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        hint = " (write it without quotes)" if isinstance(value, str) and _numeric(value) else ""
        raise ReportError(source, key, expected + hint, _show(value))
    return float(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fraction(value: Any, source: str, key: str) -> float:
    """A rate between 0 and 1; a percentage is refused with the fraction it probably meant."""
    x = _number(value, source, key, "a fraction between 0 and 1")
    if 1 < x <= 100:
        raise ReportError(
            source, key, f"a fraction between 0 and 1 ({x:g} looks like a percentage: write {x / 100:g})"
        )
    if not 0 <= x <= 1:
        raise ReportError(source, key, "a fraction between 0 and 1", _show(value))
    return x


def count(value: Any, source: str, key: str) -> int:
    """A whole, non-negative number of findings or tests."""
    x = _number(value, source, key, "a whole number >= 0")
    if x < 0 or not x.is_integer():
        raise ReportError(source, key, "a whole number >= 0", _show(value))
    return int(x)


def _json(text: str, source: str, what: str) -> Any:
    if not text.strip():
        raise ReportError(source, "(file)", what, "an empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(source, f"line {exc.lineno} column {exc.colno}", what, exc.msg) from None


def _object(text: str, source: str, what: str) -> dict[str, Any]:
    doc = _json(text, source, what)
    if not isinstance(doc, dict):
        raise ReportError(source, "(top level)", what, _show(doc))
    return doc


def _xml(text: str, source: str) -> ET.Element:
    # expat expands internal entities; CI reports never need a DTD, so none is accepted (no entity bombs)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ReportError(source, "<!DOCTYPE>", "XML without a document type declaration")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(": line ")[0]  # the position is named once, as the key
        raise ReportError(source, f"line {line} column {column + 1}", "well-formed XML", reason) from None


def _is_xml(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def _is_sarif(doc: Mapping[str, Any]) -> bool:
    return "runs" in doc and ("version" in doc or "sarif" in str(doc.get("$schema", "")).lower())


def _is_coverage_py(doc: Mapping[str, Any]) -> bool:
    return "totals" in doc and "meta" in doc


def _misplaced(doc: Mapping[str, Any], source: str, flag: str) -> None:
    """A report given to the wrong flag: say which flag reads it."""
    if flag != "--security" and _is_sarif(doc):
        raise ReportError(source, "runs", f"{flag} input, not SARIF (give SARIF with --security)")
    if flag != "--coverage" and _is_coverage_py(doc):
        raise ReportError(source, "totals", f"{flag} input, not coverage.py JSON (give it with --coverage)")


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
            if not isinstance(value, dict):
                raise ReportError(source, key, f"an object of counts ({', '.join(SEVERITIES)})", _show(value))
            for sev, n in value.items():
                if sev not in SEVERITIES:
                    raise ReportError(
                        source, f"security.{sev}", f"only {', '.join(SEVERITIES)}", "an unknown key"
                    )
                if sev in doc:
                    raise ReportError(source, f"security.{sev}", "each count once", "also at the top level")
                out[sev] = count(n, source, f"security.{sev}")
        else:
            out[key] = count(value, source, key)
    return out


# --- tests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JUnitCounts:
    passed: int = 0
    failed: int = 0
    errored: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errored + self.skipped

    def __add__(self, other: JUnitCounts) -> JUnitCounts:
        return JUnitCounts(
            self.passed + other.passed, self.failed + other.failed,
            self.errored + other.errored, self.skipped + other.skipped,
        )  # fmt: skip

    def pass_rate(self, source: str) -> float:
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


def _attr_count(suite: ET.Element, name: str, source: str) -> int:
    raw = suite.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        raise ReportError(source, f"<{suite.tag} {name}>", "a whole number >= 0", _show(raw)) from None
    return count(value, source, f"<{suite.tag} {name}>")


def junit_counts(text: str, source: str) -> JUnitCounts:
    """Count a JUnit XML report (pytest, Jest, Maven Surefire, gotestsum; flat or nested suites)."""
    root = _xml(text, source)
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(source, f"<{root.tag}>", "JUnit XML (a <testsuites> or <testsuite> root)")
    cases = list(root.iter("testcase"))
    if cases:
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
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = JUnitCounts()
    for suite in suites:
        tests = _attr_count(suite, "tests", source)
        failed = _attr_count(suite, "failures", source)
        errored = _attr_count(suite, "errors", source)
        skipped = _attr_count(suite, "skipped", source) + _attr_count(suite, "disabled", source)
        if failed + errored + skipped > tests:
            raise ReportError(
                source, f"<{suite.tag} tests>", "at least failures + errors + skipped", str(tests)
            )
        total += JUnitCounts(tests - failed - errored - skipped, failed, errored, skipped)
    return total


def read_tests(text: str, source: str) -> tuple[Parsed, JUnitCounts | None]:
    """A `--tests` file: JUnit XML (counted), or results.json. Returns the counts for summing files."""
    if _is_xml(text):
        counts = junit_counts(text, source)
        return Parsed("JUnit XML", {"passRate": counts.pass_rate(source)}, counts.describe()), counts
    doc = _object(text, source, "JUnit XML or a results.json object")
    _misplaced(doc, source, "--tests")
    fields = results_json(doc, source)
    return Parsed("results.json", fields, ", ".join(f"{k} {v:g}" for k, v in fields.items())), None


# --- coverage ------------------------------------------------------------------------------------


def read_coverage(text: str, source: str) -> Parsed:
    """A `--coverage` file: coverage.py JSON, Cobertura XML, or `{"coverage": 0.91}`."""
    if _is_xml(text):
        root = _xml(text, source)
        if root.tag != "coverage":
            raise ReportError(source, f"<{root.tag}>", "Cobertura XML (a <coverage> root)")
        if root.get("lines-valid") is not None and root.get("lines-covered") is not None:
            valid = _attr_count(root, "lines-valid", source)
            covered = _attr_count(root, "lines-covered", source)
            if valid > 0:
                if covered > valid:
                    raise ReportError(
                        source, "<coverage lines-covered>", f"at most lines-valid ({valid})", str(covered)
                    )
                return Parsed("Cobertura XML", {"coverage": covered / valid}, f"{covered}/{valid} lines")
        raw = root.get("line-rate")
        if raw is None:
            raise ReportError(
                source, "<coverage line-rate>", "a line rate between 0 and 1", "no such attribute"
            )
        try:
            rate = float(raw)
        except ValueError:
            raise ReportError(
                source, "<coverage line-rate>", "a fraction between 0 and 1", _show(raw)
            ) from None
        rate = fraction(rate, source, "<coverage line-rate>")
        return Parsed("Cobertura XML", {"coverage": rate}, f"line-rate {rate:g}")
    doc = _object(text, source, 'coverage.py JSON, Cobertura XML or {"coverage": FRACTION}')
    if _is_coverage_py(doc):
        totals = doc["totals"]
        if not isinstance(totals, dict) or "percent_covered" not in totals:
            raise ReportError(
                source, "totals.percent_covered", "coverage.py's total percentage", "no such key"
            )
        pct = _number(
            totals["percent_covered"], source, "totals.percent_covered", "a percentage from 0 to 100"
        )
        if not 0 <= pct <= 100:
            raise ReportError(source, "totals.percent_covered", "a percentage from 0 to 100", f"{pct:g}")
        return Parsed("coverage.py JSON", {"coverage": pct / 100}, f"{pct:g}% covered")
    _misplaced(doc, source, "--coverage")
    fields = results_json(doc, source, allowed=("coverage",))
    if not fields:
        raise ReportError(source, "coverage", "the key coverage", "an empty object")
    return Parsed("results.json", fields, f"coverage {fields['coverage']:g}")


# --- security ------------------------------------------------------------------------------------

LEVELS: dict[str, Severity | None] = {"error": "high", "warning": "medium", "note": "low", "none": None}
"""SARIF level -> severity, for results without a security-severity score."""


def severity_of_score(score: float) -> Severity | None:
    """GitHub code scanning's mapping of a CVSS-like security-severity score (0.0 counts as none)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else None


def _score(props: Any, source: str, path: str) -> float | None:
    if not isinstance(props, dict) or "security-severity" not in props:
        return None
    raw = props["security-severity"]
    key = f"{path}.properties.security-severity"
    try:
        score = float(raw) if isinstance(raw, str) else _number(raw, source, key, "a score from 0.0 to 10.0")
    except ValueError:
        raise ReportError(source, key, "a score from 0.0 to 10.0", _show(raw)) from None
    if not 0 <= score <= 10:
        raise ReportError(source, key, "a score from 0.0 to 10.0", _show(raw))
    return score


def _rule(result: Mapping[str, Any], rules: list[Any]) -> Mapping[str, Any]:
    raw = result.get("rule")
    ref: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    index = result.get("ruleIndex", ref.get("index"))
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
        found = rules[index]
        return found if isinstance(found, dict) else {}
    rule_id = result.get("ruleId", ref.get("id"))
    for r in rules:
        if isinstance(r, dict) and r.get("id") == rule_id:
            return r
    return {}


def _suppressed(result: Mapping[str, Any]) -> bool:
    """Suppressed unless every suppression is still under review or was rejected (SARIF 3.35)."""
    sups = result.get("suppressions")
    if not isinstance(sups, list) or not sups:
        return False
    return any(isinstance(s, dict) and s.get("status", "accepted") == "accepted" for s in sups)


def sarif_counts(doc: Mapping[str, Any], source: str) -> tuple[dict[str, int], list[str]]:
    """Findings by severity over every run of a SARIF 2.1 log, and the tools that produced them."""
    if doc.get("version") != "2.1.0":
        raise ReportError(source, "version", 'SARIF "2.1.0"', _show(doc.get("version")))
    runs = doc["runs"]
    if not isinstance(runs, list):
        raise ReportError(source, "runs", "a list of runs", _show(runs))
    counts = dict.fromkeys(SEVERITIES, 0)
    tools: list[str] = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ReportError(source, f"runs[{i}]", "a run object", _show(run))
        driver = (run.get("tool") or {}).get("driver") or {}
        tools.append(str(driver.get("name", "?")))
        rules = driver.get("rules") or []
        results = run.get("results")
        if not isinstance(results, list):  # SARIF: absent or null results mean the tool did not finish
            raise ReportError(
                source, f"runs[{i}].results", "a list of results (the scan did not finish?)", _show(results)
            )
        for j, result in enumerate(results):
            path = f"runs[{i}].results[{j}]"
            if not isinstance(result, dict):
                raise ReportError(source, path, "a result object", _show(result))
            if result.get("kind", "fail") != "fail" or result.get("baselineState") == "absent":
                continue
            if _suppressed(result):
                continue
            rule = _rule(result, rules if isinstance(rules, list) else [])
            score = _score(result.get("properties"), source, path)
            if score is None:
                score = _score(rule.get("properties"), source, f"{path} rule")
            if score is not None:
                sev = severity_of_score(score)
            else:
                config = rule.get("defaultConfiguration") or {}
                level = result.get(
                    "level", config.get("level", "warning") if isinstance(config, dict) else "warning"
                )
                if level not in LEVELS:
                    raise ReportError(source, f"{path}.level", "error, warning, note or none", _show(level))
                sev = LEVELS[level]
            if sev is not None:
                counts[sev] += 1
    return counts, tools


def read_security(text: str, source: str) -> Parsed:
    """A `--security` file: SARIF 2.1, or counts `{"critical": 0, "high": 0, "medium": 2, "low": 5}`."""
    if _is_xml(text):
        raise ReportError(source, "(file)", "SARIF 2.1 JSON or a JSON object of counts", "XML")
    doc = _object(text, source, "SARIF 2.1 JSON or a JSON object of counts")
    if _is_sarif(doc):
        counts, tools = sarif_counts(doc, source)
        detail = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES) + f" (from {', '.join(tools) or 'no run'})"
        return Parsed("SARIF 2.1", counts, detail)
    _misplaced(doc, source, "--security")
    fields = results_json(doc, source)
    return Parsed("results.json", fields, ", ".join(f"{v} {k}" for k, v in fields.items()))


# --- metrics and privacy -------------------------------------------------------------------------


def read_metrics(text: str, source: str) -> dict[str, float]:
    """A metrics or baseline file: one flat JSON object of name: number (as the trainer reports them)."""
    doc = _object(text, source, 'one JSON object of name: number (e.g. {"eval_accuracy": 0.91})')
    return {
        k: _number(v, source, k, "a number (metrics are one flat object of name: number)")
        for k, v in doc.items()
    }


PRIVACY_KEYS = (
    "epsilonBudget",
    "noiseMultiplier",
    "sampleRate",
    "steps",
    "delta",
    "accountant",
    "claimedEpsilon",
)


def read_privacy(text: str, source: str) -> PrivacyInput:
    """A `--privacy` file: the budget and the DP-SGD parameters to recompute epsilon from."""
    doc = _object(text, source, "a JSON object with epsilonBudget and the DP-SGD parameters")
    for key in doc:
        if key not in PRIVACY_KEYS:
            raise ReportError(source, key, f"only the keys {', '.join(PRIVACY_KEYS)}", "an unknown key")
    if "epsilonBudget" not in doc:
        raise ReportError(source, "epsilonBudget", "the privacy budget (a number > 0)", "no such key")

    def positive(key: str) -> float | None:
        if key not in doc:
            return None
        x = _number(doc[key], source, key, "a number > 0")
        if x <= 0:
            raise ReportError(source, key, "a number > 0", _show(doc[key]))
        return x

    budget = positive("epsilonBudget")
    assert budget is not None
    delta = positive("delta") or 1e-5
    if delta >= 1:
        raise ReportError(source, "delta", "a number between 0 and 1", _show(doc["delta"]))
    accountant = doc.get("accountant", "rdp")
    if accountant not in ("rdp", "pld"):
        raise ReportError(source, "accountant", "rdp or pld", _show(accountant))
    noise, rate = positive("noiseMultiplier"), None
    if "sampleRate" in doc:
        rate = fraction(doc["sampleRate"], source, "sampleRate")
    if (noise is None) != (rate is None):
        raise ReportError(
            source,
            "sampleRate" if rate is None else "noiseMultiplier",
            "noiseMultiplier and sampleRate together",
        )
    steps = count(doc["steps"], source, "steps") if "steps" in doc else 1
    if steps < 1:
        raise ReportError(source, "steps", "a whole number >= 1", _show(doc["steps"]))
    return PrivacyInput(
        epsilon_budget=budget, delta=delta, accountant=accountant, steps=steps,
        noise_multiplier=noise, sample_rate=rate, claimed_epsilon=positive("claimedEpsilon"),
    )  # fmt: skip
