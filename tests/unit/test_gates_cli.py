"""`carbontrack gates check` for CI pipelines: readable report, exit status, JUnit XML."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from carbontrack.cli import gates_files, main


def write(tmp: Path, name: str, doc: object) -> str:
    path = tmp / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_passing_gates_exit_zero_and_write_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "gates.xml"
    code = main([
        "gates", "check", "--context", "production", "--metric", "eval_accuracy", "--min-score", "0.8",
        "--metrics", write(tmp_path, "m.json", {"eval_accuracy": 0.85, "latency_ms": 104}),
        "--baseline", write(tmp_path, "b.json", {"eval_accuracy": 0.86, "latency_ms": 100}),
        "--tests", write(tmp_path, "t.json", {"passRate": 0.99, "coverage": 0.92}),
        "--security", write(tmp_path, "s.json", {"critical": 0, "high": 0, "medium": 2}),
        "--junit", str(junit),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS  quality.regression" in out  # a regression of exactly the limit passes
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "8" and suite.get("failures") == "0"


def test_failing_privacy_gate_exits_one_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "gates.xml"
    privacy = {
        "epsilonBudget": 8,
        "noiseMultiplier": 1.1,
        "sampleRate": 0.01,
        "steps": 20000,
        "delta": 1e-5,
        "claimedEpsilon": 7.9,
    }
    code = main(["gates", "check", "--privacy", write(tmp_path, "p.json", privacy), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  privacy.epsilon  epsilon projected to step 20000 8.37031 > 8 (the job claims 7.9)" in out
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "GateFailed"


def test_unusable_input_exits_two(tmp_path: Path) -> None:
    assert main(["gates", "check", "--metrics", str(tmp_path / "missing.json")]) == 2


def test_missing_data_in_development_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["gates", "check", "--context", "development", "--metric", "eval_accuracy", "--min-score", "0.8"]
    )
    assert code == 0 and "WARN  quality.score" in capsys.readouterr().out


JUNIT = """<testsuites><testsuite name="pytest" tests="4">
<testcase name="a"/><testcase name="b"/><testcase name="c"/><testcase name="d"><skipped/></testcase>
</testsuite></testsuites>"""
SARIF = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "Bandit"}}, "results": [
    {"ruleId": "B101", "level": "note"}, {"ruleId": "B602", "level": "warning"},
]}]}  # fmt: skip
COVERAGE = {"meta": {"version": "7.6.1"}, "totals": {"percent_covered": 93.5}}


def text(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(body)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gates", "check", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ci_formats_are_read_by_content_and_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code, out, err = run(
        capsys, "--tests", text(tmp_path, "junit.xml", JUNIT),
        "--coverage", write(tmp_path, "coverage.json", COVERAGE),
        "--security", write(tmp_path, "bandit.sarif", SARIF),
        "--json", str(report), "--markdown", str(summary),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "PASS  tests.passRate     test pass rate 1 >= 0.98",
        "PASS  tests.coverage     coverage 0.935 >= 0.9",
        "PASS  security.critical  critical findings 0 <= 0",
        "PASS  security.high      high findings 0 <= 0",
        "PASS  security.medium    medium findings 1 <= 5",
        "PASS  security.low       low findings 1 (no limit: set thresholds.maxLow to gate them)",
        "",
        "6/6 passed (production)",
    ]
    doc = json.loads(report.read_text())
    assert (doc["exitCode"], doc["passed"], doc["summary"], doc["context"]) == (
        0,
        True,
        "6/6 passed",
        "production",
    )
    assert doc["gates"][1] == {
        "name": "tests.coverage", "passed": True, "verdict": "Passed", "observed": 0.935, "threshold": 0.9,
        "message": "coverage 0.935 >= 0.9", "warning": False,
    }  # fmt: skip
    assert [(i["flag"], i["format"], i["detail"]) for i in doc["inputs"]] == [
        ("--tests", "JUnit XML", "3 passed, 0 failed, 0 errored, 1 skipped"),
        ("--coverage", "coverage.py JSON", "93.5% covered"),
        ("--security", "SARIF 2.1", "0 critical, 0 high, 1 medium, 1 low (from Bandit)"),
    ]
    md = summary.read_text().splitlines()
    assert md[0] == "earlier step", "the step summary is appended to, as GitHub expects"
    assert md[1] == "### carbontrack gates (production): passed, 6/6 passed"
    assert "| `tests.coverage` | ✅ PASS | 0.935 | 0.9 | coverage 0.935 >= 0.9 |" in md
    assert f"- `--tests {tmp_path}/junit.xml`: JUnit XML, 3 passed, 0 failed, 0 errored, 1 skipped" in md


def test_junit_files_add_up_and_sarif_files_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = "<testsuite><testcase name='x'><failure/></testcase></testsuite>"
    code, out, _ = run(
        capsys, "--context", "development",
        "--tests", text(tmp_path, "a.xml", JUNIT), "--tests", text(tmp_path, "b.xml", failing),
        "--security", write(tmp_path, "a.sarif", SARIF), "--security", write(tmp_path, "b.sarif", SARIF),
    )  # fmt: skip
    assert code == 1
    assert out.splitlines() == [
        "FAIL  tests.passRate     test pass rate 0.75 < 0.8",  # 3 passed of 4 that ran, over both files
        "WARN  tests.coverage     no coverage reported",
        "PASS  security.critical  critical findings 0 <= 0",
        "PASS  security.high      high findings 0 <= 5",
        "PASS  security.medium    medium findings 2 <= 20",
        "PASS  security.low       low findings 2 (no limit: set thresholds.maxLow to gate them)",
        "",
        "tests.passRate failed (development)",
    ]


def test_failed_gate_exits_one_and_markdown_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "summary.md"
    code, out, _ = run(
        capsys, "--tests", write(tmp_path, "t.json", {"passRate": 0.97}), "--markdown", str(summary)
    )
    assert code == 1
    assert "FAIL  tests.passRate     test pass rate 0.97 < 0.98" in out
    md = summary.read_text()
    assert md.startswith("### carbontrack gates (production): failed, tests.passRate failed (+4)\n")
    assert "| `tests.coverage` | ❌ FAIL |  | 0.9 | no coverage reported: failing closed |" in md


USAGE_ERRORS: list[tuple[str, list[str], str]] = [
    # (name, argv with {d} for the tmp dir, exact message after "carbontrack gates: unusable input: ")
    ("empty-tests-path", ["--tests", "", "--security", ""],
     "--tests: expected a file path, got an empty string (an unset CI variable?)"),
    ("empty-security-path", ["--security", ""],
     "--security: expected a file path, got an empty string (an unset CI variable?)"),
    ("missing-file", ["--tests", "{d}/nope.xml"], "{d}/nope.xml: no such file (given with --tests)"),
    ("no-inputs", [],
     "nothing to judge: expected at least one of --metric (with --min-score or --baseline), --tests, "
     "--coverage, --security, --privacy"),
    ("percentage", ["--tests", "{d}/pct.json"],
     "{d}/pct.json: passRate: expected a fraction between 0 and 1 (97 looks like a percentage: write 0.97)"),
    ("unknown-keys", ["--tests", "{d}/other.json"],
     "{d}/other.json: total_tests: expected only the keys passRate, coverage, security, critical, high, "
     "medium, low, got an unknown key"),
    ("string-number", ["--security", "{d}/str.json"],
     '{d}/str.json: critical: expected a whole number >= 0 (write it without quotes), got "0"'),
    ("nested-metrics", ["--metric", "acc", "--min-score", "0.8", "--metrics", "{d}/nested.json"],
     "{d}/nested.json: eval: expected a number (metrics are one flat object of name: number), got an object"),
    ("metric-judges-nothing", ["--metric", "eval_accuracy"],
     "--metric eval_accuracy: expected --min-score or a --baseline file with the key eval_accuracy; "
     "otherwise it judges nothing"),
    ("min-score-without-metric", ["--min-score", "0.8", "--tests", "{d}/ok.json"],
     "--min-score/--max-regression: expected --metric to name the metric they judge"),
    ("coverage-twice", ["--tests", "{d}/ok.json", "--coverage", "{d}/cov.json"],
     "{d}/cov.json: coverage: expected it from one file only, also given by {d}/ok.json"),
    ("pass-rate-twice", ["--tests", "{d}/ok.json", "--tests", "{d}/junit.xml"],
     "{d}/ok.json: passRate: expected it from one file only, also counted from {d}/junit.xml"),
    ("not-utf8", ["--tests", "{d}/latin1.json"],
     "{d}/latin1.json: expected UTF-8 text (--tests), got invalid continuation byte at byte 13"),
    ("sarif-and-counts", ["--security", "{d}/str-free.json", "--security", "{d}/scan.sarif"],
     "{d}/scan.sarif: critical: expected it from one file only, also given by {d}/str-free.json"),
    ("same-file-twice", ["--security", "{d}/scan.sarif", "--security", "{d}/scan.sarif"],
     "{d}/scan.sarif: given twice with --security"),
    ("junit-given-as-coverage", ["--coverage", "{d}/junit.xml"],
     "{d}/junit.xml: <testsuites>: expected Cobertura XML (a <coverage> root)"),
    ("directory", ["--tests", "{d}/reports"],
     "{d}/reports: is a directory, expected a file (given with --tests)"),
    ("fifo", ["--security", "{d}/fifo"], "{d}/fifo: not a regular file (given with --security)"),
    ("over-the-size-cap", ["--tests", "{d}/huge.xml"],
     "{d}/huge.xml: expected a file of at most 20 MiB (20,971,520 bytes; given with --tests), "
     "got 52,428,800 bytes"),
    ("nested-too-deep", ["--metric", "acc", "--min-score", "0.8", "--metrics", "{d}/deep.json"],
     "{d}/deep.json: line 1 column 202: expected JSON with no value inside more than 200 nested arrays or "
     "objects, got deeper nesting"),
    ("coverage-over-no-code", ["--coverage", "{d}/no-code.json"],
     "{d}/no-code.json: totals.num_statements: expected at least one statement measured "
     "(a report over no code is no data, not 100% coverage), got 0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "message"), USAGE_ERRORS, ids=[e[0] for e in USAGE_ERRORS])
def test_usage_errors_exit_two_naming_file_key_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, argv: list[str], message: str
) -> None:
    write(tmp_path, "pct.json", {"passRate": 97, "coverage": 92})
    write(tmp_path, "other.json", {"total_tests": 1000, "passed_tests": 970, "coverage_percent": 92})
    write(tmp_path, "str.json", {"critical": "0", "high": "0"})
    write(tmp_path, "nested.json", {"eval": {"accuracy": 0.9}})
    write(tmp_path, "ok.json", {"passRate": 0.99, "coverage": 0.95})
    write(tmp_path, "cov.json", {"coverage": 0.95})
    text(tmp_path, "junit.xml", JUNIT)
    write(tmp_path, "str-free.json", {"critical": 0, "high": 0})
    write(tmp_path, "scan.sarif", SARIF)
    (tmp_path / "latin1.json").write_bytes(b'{"passRate": \xe9}')
    (tmp_path / "reports").mkdir()
    os.mkfifo(tmp_path / "fifo")  # opened without blocking, then refused by its fstat
    with open(tmp_path / "huge.xml", "wb") as huge:
        huge.truncate(50 * 1024 * 1024)  # sparse: the size stat reports, no bytes written or read
    text(tmp_path, "deep.json", "[" * 100_000)
    write(tmp_path, "no-code.json", {**COVERAGE, "totals": {"num_statements": 0, "percent_covered": 100.0}})
    report = tmp_path / "report.json"
    code, out, err = run(capsys, *[a.format(d=tmp_path) for a in argv], "--json", str(report))
    assert code == 2, out
    assert err == f"carbontrack gates: unusable input: {message.format(d=tmp_path)}\n"
    assert "Traceback" not in err and out == ""
    doc = json.loads(report.read_text())
    assert (doc["exitCode"], doc["passed"], doc["error"]) == (2, False, message.format(d=tmp_path))


def test_a_bad_flag_value_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gates", "check", "--metric", "acc", "--min-score", "high"])
    assert exit_.value.code == 2
    assert "argument --min-score: invalid float value: 'high'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--min-score", "inf"], ["--min-score", "nan"], ["--min-score=-inf"], ["--max-regression", "NaN"],
    ["--max-regression", "infinity"],
])  # fmt: skip
def test_a_threshold_that_is_not_a_finite_number_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    metrics = write(tmp_path, "m.json", {"acc": 0.9})
    baseline = write(tmp_path, "b.json", {"acc": 0.9})
    with pytest.raises(SystemExit) as exit_:
        main(["gates", "check", "--metric", "acc", "--metrics", metrics, "--baseline", baseline, *argv])
    assert exit_.value.code == 2
    flag, value = argv[0].split("=") if "=" in argv[0] else argv
    assert f"argument {flag}: expected a finite number, got '{value}'" in capsys.readouterr().err


def test_a_file_is_read_no_further_than_the_size_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gates_files, "MAX_INPUT_BYTES", 64)
    at_cap = text(tmp_path, "at.json", '{"passRate": 0.99}'.ljust(64))
    over_cap = text(tmp_path, "over.json", '{"passRate": 0.99}'.ljust(65))
    assert run(capsys, "--context", "development", "--tests", at_cap)[0] == 0
    code, _, err = run(capsys, "--tests", over_cap)
    assert code == 2 and err.endswith("(64 bytes; given with --tests), got 65 bytes\n")
    status = Path("/proc/self/status")  # a regular file whose stat says 0 bytes
    if status.is_file():
        code, _, err = run(capsys, "--tests", str(status))
        assert code == 2 and err.endswith("got more than 64 bytes\n")


def test_baseline_throughput_and_memory_feed_their_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "--metric", "eval_accuracy", "--min-score", "0.8",
        "--metrics", write(tmp_path, "m.json", {"eval_accuracy": 0.9, "samples_per_second": 850,
                                                "peak_memory_mb": 41_000}),
        "--baseline", write(tmp_path, "b.json", {"eval_accuracy": 0.9, "samples_per_second": 1000,
                                                 "peak_memory_mb": 40_000}),
    )  # fmt: skip
    assert code == 1
    assert "FAIL  quality.throughput  relative samples_per_second decrease 0.15 > 0.1" in out
    assert "PASS  quality.memory      relative peak_memory_mb increase 0.025 <= 0.1" in out


def test_an_unwritable_report_path_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = write(tmp_path, "s.json", {"critical": 0, "high": 0, "medium": 0})
    code, _, err = run(capsys, "--security", ok, "--markdown", str(tmp_path / "no" / "summary.md"))
    assert code == 2
    assert err == f"carbontrack gates: {tmp_path}/no/summary.md: cannot write: No such file or directory\n"
