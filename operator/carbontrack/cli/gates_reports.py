"""The reports `carbontrack gates check` writes: JUnit XML, JSON and Markdown, from the judged report and
the inputs it was judged on."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from carbontrack.core.gates.judgement import Report


@dataclass(frozen=True)
class Input:
    """One input file as the reports name it: its flag, path, the format found and what it held."""

    flag: str
    path: str
    format: str
    detail: str


def verdict_word(passed: bool, warning: bool) -> str:
    """PASS, WARN (passed with a warning) or FAIL, as the console and Markdown show a gate."""
    return "FAIL" if not passed else "WARN" if warning else "PASS"


def junit(report: Report, path: str) -> None:
    """Write the report as JUnit XML: one test case per gate, so a CI page lists the gates as tests."""
    suite = ET.Element(
        "testsuite",
        name="carbontrack-gates",
        tests=str(len(report.results)),
        failures=str(len(report.failed())),
        errors="0",
        skipped="0",
    )
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname="carbontrack.gates", name=r.name, time="0")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.message, type="GateFailed")
            failure.text = f"observed={r.observed} threshold={r.threshold}"
        elif r.warning:
            ET.SubElement(case, "system-out").text = f"warning: {r.message}"
    root = ET.Element("testsuites", name="carbontrack")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def json_report(
    context: str, code: int, report: Report | None, inputs: list[Input], error: str | None
) -> str:
    """The machine-readable report: exitCode 0/1/2, every gate's numbers, every input's format."""
    doc: dict[str, Any] = {"context": context, "exitCode": code, "passed": code == 0}
    if error is not None:
        doc["error"] = error
    if report is not None:
        doc["summary"] = report.summary()
        doc["gates"] = [r.model_dump(by_alias=True, mode="json") for r in report.results]
    doc["inputs"] = [{"flag": i.flag, "path": i.path, "format": i.format, "detail": i.detail} for i in inputs]
    return json.dumps(doc, indent=2) + "\n"


def _cell(value: object) -> str:
    text = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(context: str, report: Report, inputs: list[Input]) -> str:
    """A summary for a CI step summary page (GitHub's $GITHUB_STEP_SUMMARY renders it)."""
    icon = {"PASS": "✅", "WARN": "⚠️", "FAIL": "❌"}
    head = "passed" if report.all_passed() else "failed"
    lines = [
        f"### carbontrack gates ({context}): {head}, {report.summary()}",
        "",
        "| gate | verdict | observed | threshold | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report.results:
        v = verdict_word(r.passed, r.warning)
        cells = (f"`{r.name}`", f"{icon[v]} {v}", _cell(r.observed), _cell(r.threshold), _cell(r.message))
        lines.append("| " + " | ".join(cells) + " |")
    if inputs:
        lines += ["", "Inputs:", ""]
        lines += [f"- `{i.flag} {_cell(i.path)}`: {i.format}, {_cell(i.detail)}" for i in inputs]
    return "\n".join(lines) + "\n"
