"""`carbontrack gates check` for CI pipelines: readable report, exit status, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from carbontrack.cli import main


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
