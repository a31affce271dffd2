"""`--security` files: SARIF 2.1 logs, or counts `{"critical": 0, "high": 0, "medium": 2, "low": 5}`.

A SARIF result counts when its `kind` is "fail" (the default), it is not suppressed, and its
`baselineState` is not "absent". A `security-severity` score (on the result's or its rule's properties,
as GitHub code scanning reads it) maps >= 9.0 critical, >= 7.0 high, >= 4.0 medium, > 0 low; without
one, the `level` (the result's, else the rule's defaultConfiguration, else SARIF's default "warning")
maps error -> high, warning -> medium, note -> low, none -> not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carbontrack.core.gates.evidence.reading import (
    Parsed,
    ReportError,
    is_sarif,
    is_xml,
    json_object,
    misplaced,
    number,
    show,
)
from carbontrack.core.gates.evidence.results_json import SEVERITIES, Severity, results_json

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
        score = float(raw) if isinstance(raw, str) else number(raw, source, key, "a score from 0.0 to 10.0")
    except ValueError:
        raise ReportError(source, key, "a score from 0.0 to 10.0", show(raw)) from None
    if not 0 <= score <= 10:
        raise ReportError(source, key, "a score from 0.0 to 10.0", show(raw))
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


def _severity(result: Mapping[str, Any], rules: list[Any], source: str, path: str) -> Severity | None:
    """One counted result's severity: its score or its rule's, else its level (see the module docstring)."""
    rule = _rule(result, rules)
    score = _score(result.get("properties"), source, path)
    if score is None:
        score = _score(rule.get("properties"), source, f"{path} rule")
    if score is not None:
        return severity_of_score(score)
    config = rule.get("defaultConfiguration") or {}
    level = result.get("level", config.get("level", "warning") if isinstance(config, dict) else "warning")
    if level not in LEVELS:
        raise ReportError(source, f"{path}.level", "error, warning, note or none", show(level))
    return LEVELS[level]


def _count_run(run: Any, i: int, counts: dict[str, int], source: str) -> str:
    """Add one run's findings to `counts`; returns the name of the tool that produced them."""
    if not isinstance(run, dict):
        raise ReportError(source, f"runs[{i}]", "a run object", show(run))
    driver = (run.get("tool") or {}).get("driver") or {}
    rules = driver.get("rules") or []
    results = run.get("results")
    if not isinstance(results, list):  # SARIF: absent or null results mean the tool did not finish
        raise ReportError(
            source, f"runs[{i}].results", "a list of results (the scan did not finish?)", show(results)
        )
    for j, result in enumerate(results):
        path = f"runs[{i}].results[{j}]"
        if not isinstance(result, dict):
            raise ReportError(source, path, "a result object", show(result))
        if result.get("kind", "fail") != "fail" or result.get("baselineState") == "absent":
            continue
        if _suppressed(result):
            continue
        sev = _severity(result, rules if isinstance(rules, list) else [], source, path)
        if sev is not None:
            counts[sev] += 1
    return str(driver.get("name", "?"))


def sarif_counts(doc: Mapping[str, Any], source: str) -> tuple[dict[str, int], list[str]]:
    """Findings by severity over every run of a SARIF 2.1 log, and the tools that produced them."""
    if doc.get("version") != "2.1.0":
        raise ReportError(source, "version", 'SARIF "2.1.0"', show(doc.get("version")))
    runs = doc["runs"]
    if not isinstance(runs, list):
        raise ReportError(source, "runs", "a list of runs", show(runs))
    counts = dict.fromkeys(SEVERITIES, 0)
    tools = [_count_run(run, i, counts, source) for i, run in enumerate(runs)]
    return counts, tools


def read_security(text: str, source: str) -> Parsed:
    """A `--security` file: SARIF 2.1, or counts `{"critical": 0, "high": 0, "medium": 2, "low": 5}`."""
    if is_xml(text):
        raise ReportError(source, "(file)", "SARIF 2.1 JSON or a JSON object of counts", "XML")
    doc = json_object(text, source, "SARIF 2.1 JSON or a JSON object of counts")
    if is_sarif(doc):
        counts, tools = sarif_counts(doc, source)
        detail = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES) + f" (from {', '.join(tools) or 'no run'})"
        return Parsed("SARIF 2.1", counts, detail)
    misplaced(doc, source, "--security")
    fields = results_json(doc, source)
    return Parsed("results.json", fields, ", ".join(f"{v} {k}" for k, v in fields.items()))
