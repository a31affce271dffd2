"""`carbontrack gates check`: the same gates the operator runs, for a CI pipeline.

    carbontrack gates check --context production --metric eval_accuracy --min-score 0.8 \\
        --metrics m.json [--baseline b.json] [--tests t.json] [--security s.json] \\
        [--privacy p.json] [--junit out.xml]

Files (JSON): metrics and baseline `{"eval_accuracy": 0.91, "latency_ms": 105}`; tests
`{"passRate": 0.99, "coverage": 0.91}`; security `{"critical": 0, "high": 0, "medium": 2}`;
privacy `{"epsilonBudget": 8, "noiseMultiplier": 1.1, "sampleRate": 0.01, "steps": 20000,
"delta": 1e-5, "accountant": "rdp", "claimedEpsilon": 7.9}`. The tests and security objects are what
a ConfigMap named by spec.gates.tests.fromConfigMap holds under `results.json` (merged in one object).
Exit status 0 when every gate passes, 1 when one fails, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.gates import Evidence, Report, judge
from carbontrack.core.privacy import epsilon
from carbontrack.core.test_evidence import tests_from


def _load(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def evaluate(args: argparse.Namespace) -> Report:
    metrics = {k: float(v) for k, v in _load(args.metrics).items()}
    baseline = _load(args.baseline)
    tests_doc = {**_load(args.tests), **_load(args.security)}
    privacy = _load(args.privacy)
    quality: dict[str, Any] | None = None
    if args.metric:
        quality = {"metric": args.metric, "higherIsBetter": not args.lower_is_better}
        if args.min_score is not None:
            quality["minScore"] = args.min_score
        if args.metric in baseline:
            quality["baseline"] = float(baseline[args.metric])
            if args.max_regression is not None:
                quality["maxRegression"] = args.max_regression
        if "latency_ms" in baseline:
            quality["baselineLatencyMs"] = float(baseline["latency_ms"])
    steps = int(privacy.get("steps", 1))
    gates: dict[str, Any] = {"context": args.context}
    if quality:
        gates["quality"] = quality
    if args.tests or args.security:
        gates["tests"] = {}
    eps = None
    if privacy:
        gates["privacy"] = {"epsilon": privacy["epsilonBudget"], "delta": privacy.get("delta", 1e-5),
                            "accountant": privacy.get("accountant", "rdp")}  # fmt: skip
        if "noiseMultiplier" in privacy:
            eps = epsilon(float(privacy["noiseMultiplier"]), float(privacy["sampleRate"]), steps,
                          float(privacy.get("delta", 1e-5)), privacy.get("accountant", "rdp"))  # fmt: skip
    spec = CarbonTrackedJobSpec.model_validate(
        {"replicas": 1, "template": {}, "totalSteps": steps, "gates": gates}
    )
    evidence = Evidence(
        metrics=metrics, tests=tests_from(tests_doc) if tests_doc else None,
        epsilon_projected=eps, epsilon_claimed=privacy.get("claimedEpsilon"),
    )  # fmt: skip
    return judge(spec, evidence)


def junit(report: Report, path: str) -> None:
    suite = ET.Element(
        "testsuite", name="carbontrack-gates", tests=str(len(report.results)),
        failures=str(len(report.failed())), errors="0", skipped="0",
    )  # fmt: skip
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


def check(args: argparse.Namespace) -> int:
    try:
        report = evaluate(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"carbontrack gates: unusable input: {exc}", file=sys.stderr)
        return 2
    width = max((len(r.name) for r in report.results), default=10)
    for r in report.results:
        mark = "PASS" if r.passed else "FAIL"
        if r.passed and r.warning:
            mark = "WARN"
        print(f"{mark}  {r.name:<{width}}  {r.message}")
    print(f"\n{report.summary()} ({args.context})")
    if args.junit:
        junit(report, args.junit)
    return 0 if report.all_passed() else 1


def add_parser(sub: Any) -> None:
    gates = sub.add_parser("gates", help="judge the gates from files, for CI pipelines")
    gsub = gates.add_subparsers(dest="gates_command", required=True)
    c = gsub.add_parser("check", help="print a report, exit 0 (pass) or 1 (fail), optionally write JUnit XML")
    c.add_argument("--context", choices=["development", "staging", "production"], default="production")
    c.add_argument("--metrics", help="eval metrics JSON")
    c.add_argument("--metric", help="the quality metric to judge (a key of --metrics)")
    c.add_argument("--min-score", type=float)
    c.add_argument("--max-regression", type=float)
    c.add_argument("--lower-is-better", action="store_true")
    c.add_argument("--baseline", help="baseline metrics JSON (same keys as --metrics)")
    c.add_argument("--tests", help="test results JSON")
    c.add_argument("--security", help="security scan counts JSON")
    c.add_argument("--privacy", help="DP parameters and budget JSON")
    c.add_argument("--junit", help="write JUnit XML here")
    c.set_defaults(func=check)
