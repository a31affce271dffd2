"""`carbontrack gates check`: the same gates the operator runs, for a CI pipeline.

    carbontrack gates check --context production --metric eval_accuracy --min-score 0.8 \\
        --metrics m.json [--baseline b.json] [--tests junit.xml ...] [--coverage coverage.json] \\
        [--security scan.sarif] [--privacy p.json] [--junit out.xml] [--json out.json] [--markdown F]

Inputs are read in the formats CI tools write, detected by content (core/gates/evidence/ has the
parsers and the counting rules): JUnit XML or results.json for --tests, coverage.py JSON, Cobertura
XML or `{"coverage": 0.91}` for --coverage, SARIF 2.1 or counts for --security. This module only
reads files (through cli/gates_files.py) and writes reports (built in cli/gates_reports.py).

Exit status: 0 every gate passed, 1 a gate failed, 2 unusable input (a missing or empty path, a
directory, a file over 20 MiB, a file that is not what its flag reads, JSON with a value inside more
than 200 nested arrays or objects, an unknown key, a percentage where a fraction belongs, a coverage
report over no code, a threshold that is not a finite number, nothing to judge). Exit 1 always means
the evidence was read and judged.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.cli.gates_files import UsageError, read_input
from carbontrack.cli.gates_reports import Input, json_report, junit, markdown, verdict_word
from carbontrack.core.gates.evidence import (
    JUnitCounts,
    Parsed,
    PrivacyInput,
    read_coverage,
    read_metrics,
    read_privacy,
    read_security,
    read_tests,
)
from carbontrack.core.gates.judgement import CiResults, Evidence, Report, judge
from carbontrack.core.gates.privacy import epsilon


class Collected:
    """Evidence from every input file, each results.json field from exactly one file."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[float | int, str]] = {}
        self.inputs: list[Input] = []
        self.junit = JUnitCounts()
        self.junit_files: list[str] = []
        self.sarif_files: list[str] = []

    def add(self, flag: str, path: str, parsed: Parsed) -> None:
        """A file's fields; a field another file already gave is a usage error."""
        for key, value in parsed.fields.items():
            if key in self.fields:
                raise UsageError(
                    f"{path}: {key}: expected it from one file only, also given by {self.fields[key][1]}"
                )
            self.fields[key] = (value, path)
        self.inputs.append(Input(flag, path, parsed.format, parsed.detail))

    def add_sarif(self, path: str, parsed: Parsed) -> None:
        """Several scanners (bandit, trivy, ...) add up: each SARIF file counts its own findings."""
        for key, value in parsed.fields.items():
            before, source = self.fields.get(key, (0, ""))
            if source and source not in self.sarif_files:
                raise UsageError(f"{path}: {key}: expected it from one file only, also given by {source}")
            self.fields[key] = (int(before) + int(value), path)
        self.sarif_files.append(path)
        self.inputs.append(Input("--security", path, parsed.format, parsed.detail))

    def add_junit(self, path: str, counts: JUnitCounts) -> None:
        """JUnit files add up into one pass rate."""
        self.junit += counts
        self.junit_files.append(path)
        self.inputs.append(Input("--tests", path, "JUnit XML", counts.describe()))

    def tests(self) -> CiResults | None:
        """The CI results the files gave, the JUnit files' pass rate included; None where none gave any."""
        fields = {k: v for k, (v, _) in self.fields.items()}
        if self.junit_files:
            if "passRate" in fields:
                raise UsageError(
                    f"{self.fields['passRate'][1]}: passRate: expected it from one file only, "
                    f"also counted from {', '.join(self.junit_files)}"
                )
            fields["passRate"] = self.junit.pass_rate(", ".join(self.junit_files))
        if not fields:
            return None
        return CiResults(
            pass_rate=fields.get("passRate"),
            coverage=fields.get("coverage"),
            critical=_int(fields.get("critical")),
            high=_int(fields.get("high")),
            medium=_int(fields.get("medium")),
            low=_int(fields.get("low")),
        )


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def _quality(args: argparse.Namespace, baseline: dict[str, float], path: str | None) -> dict[str, Any] | None:
    """spec.gates.quality from --metric, its bounds and the baseline file's keys; None without --metric."""
    if not args.metric:
        if args.min_score is not None or args.max_regression is not None:
            raise UsageError("--min-score/--max-regression: expected --metric to name the metric they judge")
        return None
    quality: dict[str, Any] = {"metric": args.metric, "higherIsBetter": not args.lower_is_better}
    if args.min_score is not None:
        quality["minScore"] = args.min_score
    if args.metric in baseline:
        quality["baseline"] = baseline[args.metric]
        if args.max_regression is not None:
            quality["maxRegression"] = args.max_regression
    elif args.min_score is None:
        where = f"a --baseline file with the key {args.metric}" + (f" ({path} has none)" if path else "")
        raise UsageError(
            f"--metric {args.metric}: expected --min-score or {where}; otherwise it judges nothing"
        )
    for key, field in (
        ("latency_ms", "baselineLatencyMs"),
        ("samples_per_second", "baselineSamplesPerSecond"),
        ("peak_memory_mb", "baselineMemoryMb"),
    ):
        if key in baseline:
            if baseline[key] <= 0:
                raise UsageError(f"{path}: {key}: expected a number > 0, got {baseline[key]:g}")
            quality[field] = baseline[key]
    return quality


@dataclass
class Read:
    """Everything the input files hold, before it is judged."""

    got: Collected
    metrics: dict[str, float]
    baseline: dict[str, float]
    privacy: PrivacyInput | None


def evaluate(args: argparse.Namespace) -> tuple[Report, list[Input]]:
    """Read every input, build the spec the operator would judge, and judge it."""
    read = _read_inputs(args)
    privacy = read.privacy
    quality = _quality(args, read.baseline, args.baseline)
    tests = read.got.tests()
    eps = _epsilon(privacy)
    gates = _gates(args, quality, privacy)
    try:
        spec = CarbonTrackedJobSpec.model_validate(
            {"replicas": 1, "template": {}, "totalSteps": privacy.steps if privacy else 1, "gates": gates}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    claimed = privacy.claimed_epsilon if privacy else None
    evidence = Evidence(metrics=read.metrics, tests=tests, epsilon_projected=eps, epsilon_claimed=claimed)
    return judge(spec, evidence), read.got.inputs


def _read_inputs(args: argparse.Namespace) -> Read:
    """Every file the flags name, in flag order, each read in the format its content shows."""
    read = Read(Collected(), {}, {}, None)
    got = read.got
    if (text := read_input("--metrics", args.metrics)) is not None:
        read.metrics = read_metrics(text, args.metrics)
        got.inputs.append(Input("--metrics", args.metrics, "metrics JSON", f"{len(read.metrics)} metrics"))
    if (text := read_input("--baseline", args.baseline)) is not None:
        read.baseline = read_metrics(text, args.baseline)
        got.inputs.append(Input("--baseline", args.baseline, "metrics JSON", f"{len(read.baseline)} metrics"))
    for path in args.tests or []:
        _add_tests(got, path)
    if (text := read_input("--coverage", args.coverage)) is not None:
        got.add("--coverage", args.coverage, read_coverage(text, args.coverage))
    for path in args.security or []:
        _add_security(got, path)
    if (text := read_input("--privacy", args.privacy)) is not None:
        read.privacy = read_privacy(text, args.privacy)
        detail = f"budget {read.privacy.epsilon_budget:g}"
        got.inputs.append(Input("--privacy", args.privacy, "privacy JSON", detail))
    return read


def _add_tests(got: Collected, path: str) -> None:
    """A `--tests` file: JUnit files add up, a results.json gives its fields once."""
    text = read_input("--tests", path)
    assert text is not None
    parsed, counts = read_tests(text, path)
    if counts is not None:
        got.add_junit(path, counts)
    else:
        got.add("--tests", path, parsed)


def _add_security(got: Collected, path: str) -> None:
    """A `--security` file: SARIF files add up, counts JSON gives its fields once."""
    text = read_input("--security", path)
    assert text is not None
    if path in [i.path for i in got.inputs if i.flag == "--security"]:
        raise UsageError(f"{path}: given twice with --security")
    parsed = read_security(text, path)
    if parsed.format == "SARIF 2.1":
        got.add_sarif(path, parsed)
    else:
        got.add("--security", path, parsed)


def _gates(
    args: argparse.Namespace, quality: dict[str, Any] | None, privacy: PrivacyInput | None
) -> dict[str, Any]:
    """spec.gates for what the flags ask to judge; nothing to judge is a usage error."""
    gates: dict[str, Any] = {"context": args.context}
    if quality:
        gates["quality"] = quality
    if args.tests is not None or args.coverage is not None or args.security is not None:
        gates["tests"] = {}
    if privacy is not None:
        gates["privacy"] = {
            "epsilon": privacy.epsilon_budget,
            "delta": privacy.delta,
            "accountant": privacy.accountant,
        }
    if len(gates) == 1:
        raise UsageError(
            "nothing to judge: expected at least one of --metric (with --min-score or --baseline), "
            "--tests, --coverage, --security, --privacy"
        )
    return gates


def _epsilon(privacy: PrivacyInput | None) -> float | None:
    """Epsilon recomputed from the privacy file's DP-SGD parameters; None without them."""
    if privacy is None or privacy.noise_multiplier is None or privacy.sample_rate is None:
        return None
    return epsilon(
        privacy.noise_multiplier, privacy.sample_rate, privacy.steps, privacy.delta, privacy.accountant
    )


def _write(path: str, text: str, *, append: bool = False) -> None:
    try:
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def check(args: argparse.Namespace) -> int:
    """`carbontrack gates check`: judge, print, write the reports asked for; returns the exit status."""
    try:
        report, inputs = evaluate(args)
    except ValueError as exc:  # UsageError and evidence.ReportError: both name the file and key
        print(f"carbontrack gates: unusable input: {exc}", file=sys.stderr)
        if args.json:
            try:
                _write(args.json, json_report(args.context, 2, None, [], str(exc)))
            except UsageError as err:
                print(f"carbontrack gates: {err}", file=sys.stderr)
        return 2
    width = max((len(r.name) for r in report.results), default=10)
    for r in report.results:
        print(f"{verdict_word(r.passed, r.warning)}  {r.name:<{width}}  {r.message}")
    print(f"\n{report.summary()} ({args.context})")
    code = 0 if report.all_passed() else 1
    try:
        if args.junit:
            try:
                junit(report, args.junit)
            except OSError as exc:
                raise UsageError(f"{args.junit}: cannot write: {exc.strerror}") from None
        if args.json:
            _write(args.json, json_report(args.context, code, report, inputs, None))
        if args.markdown:
            _write(args.markdown, markdown(args.context, report, inputs), append=True)
    except UsageError as exc:
        print(f"carbontrack gates: {exc}", file=sys.stderr)
        return 2
    return code


def finite_float(text: str) -> float:
    """A threshold flag's value: a finite number. `inf` would pass every score, `nan` fail every one."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    gates = sub.add_parser("gates", help="judge the gates from files, for CI pipelines")
    gsub = gates.add_subparsers(dest="gates_command", required=True)
    c = gsub.add_parser(
        "check",
        help="print a report; exit 0 (pass), 1 (a gate failed) or 2 (unusable input)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--context", choices=["development", "staging", "production"], default="production")
    c.add_argument("--metrics", help="eval metrics JSON: one flat object of name: number")
    c.add_argument("--metric", help="the quality metric to judge (a key of --metrics)")
    c.add_argument("--min-score", type=finite_float, help="the worst score of --metric that passes")
    c.add_argument(
        "--max-regression",
        type=finite_float,
        help="the largest worsening of --metric from the --baseline file's, in the metric's units",
    )
    c.add_argument("--lower-is-better", action="store_true")
    c.add_argument("--baseline", help="baseline metrics JSON (same keys as --metrics)")
    c.add_argument("--tests", action="append", help="JUnit XML or results.json; repeat to add up JUnit files")
    c.add_argument("--coverage", help='coverage.py JSON, Cobertura XML or {"coverage": FRACTION}')
    c.add_argument(
        "--security", action="append", help="SARIF 2.1 or counts JSON; repeat to add up SARIF files"
    )
    c.add_argument("--privacy", help="DP parameters and budget JSON")
    c.add_argument("--junit", help="write JUnit XML here (one test case per gate)")
    c.add_argument("--json", help="write the machine-readable report here (also on exit 2)")
    c.add_argument("--markdown", help="append a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    c.set_defaults(func=check)
