"""`--coverage` files: coverage.py's `coverage json`, Cobertura XML, or `{"coverage": 0.91}`.

coverage.py JSON gives `totals.percent_covered` / 100 (the figure `coverage report` prints, branches
included when measured); Cobertura gives `lines-covered / lines-valid`, else its `line-rate`.

A report over no code is no data, never 100 %: coverage.py writes `percent_covered: 100` and Cobertura
`line-rate="1"` when no statement was measured (only empty modules matched `--source`/`--include`), so
`totals.num_statements: 0` and `lines-valid="0"` are refused, as a JUnit file in which no test ran is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from carbontrack.core.gates.evidence.reading import (
    Parsed,
    ReportError,
    attr_count,
    count,
    fraction,
    is_coverage_py,
    is_xml,
    json_object,
    misplaced,
    number,
    show,
    xml_root,
)
from carbontrack.core.gates.evidence.results_json import results_json

NO_CODE = "at least one {unit} measured (a report over no code is no data, not 100% coverage)"


def read_coverage(text: str, source: str) -> Parsed:
    """A `--coverage` file: coverage.py JSON, Cobertura XML, or `{"coverage": 0.91}`."""
    if is_xml(text):
        return _cobertura(xml_root(text, source), source)
    doc = json_object(text, source, 'coverage.py JSON, Cobertura XML or {"coverage": FRACTION}')
    if is_coverage_py(doc):
        return _coverage_py(doc, source)
    misplaced(doc, source, "--coverage")
    fields = results_json(doc, source, allowed=("coverage",))
    if not fields:
        raise ReportError(source, "coverage", "the key coverage", "an empty object")
    return Parsed("results.json", fields, f"coverage {fields['coverage']:g}")


def _cobertura(root: ET.Element, source: str) -> Parsed:
    """Covered over valid lines where both are stated and lines exist, else the stated line rate."""
    if root.tag != "coverage":
        raise ReportError(source, f"<{root.tag}>", "Cobertura XML (a <coverage> root)")
    if root.get("lines-valid") is not None:
        valid = attr_count(root, "lines-valid", source)
        if valid == 0:
            raise ReportError(source, "<coverage lines-valid>", NO_CODE.format(unit="line"), "0")
        if root.get("lines-covered") is not None:
            covered = attr_count(root, "lines-covered", source)
            if covered > valid:
                raise ReportError(
                    source, "<coverage lines-covered>", f"at most lines-valid ({valid})", str(covered)
                )
            return Parsed("Cobertura XML", {"coverage": covered / valid}, f"{covered}/{valid} lines")
    raw = root.get("line-rate")
    if raw is None:
        raise ReportError(source, "<coverage line-rate>", "a line rate between 0 and 1", "no such attribute")
    try:
        rate = float(raw)
    except ValueError:
        raise ReportError(source, "<coverage line-rate>", "a fraction between 0 and 1", show(raw)) from None
    rate = fraction(rate, source, "<coverage line-rate>")
    return Parsed("Cobertura XML", {"coverage": rate}, f"line-rate {rate:g}")


def _coverage_py(doc: dict[str, Any], source: str) -> Parsed:
    """coverage.py's total percentage as a fraction."""
    totals = doc["totals"]
    if not isinstance(totals, dict) or "percent_covered" not in totals:
        raise ReportError(source, "totals.percent_covered", "coverage.py's total percentage", "no such key")
    pct = number(totals["percent_covered"], source, "totals.percent_covered", "a percentage from 0 to 100")
    if not 0 <= pct <= 100:
        raise ReportError(source, "totals.percent_covered", "a percentage from 0 to 100", f"{pct:g}")
    if "num_statements" in totals:
        statements = count(totals["num_statements"], source, "totals.num_statements")
        if statements == 0:
            raise ReportError(source, "totals.num_statements", NO_CODE.format(unit="statement"), "0")
    return Parsed("coverage.py JSON", {"coverage": pct / 100}, f"{pct:g}% covered")
