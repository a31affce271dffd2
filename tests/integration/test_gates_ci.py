"""`carbontrack gates check` on what a real CI run writes: pytest's --junitxml and coverage.py's reports.

A tiny module and its tests are generated in a temporary folder, run under `coverage run -m pytest
--junitxml`, reported with `coverage json` and `coverage xml`, and the installed `carbontrack` command
judges the outputs in each context, as a pipeline step would. No control plane is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CALC = """\
def add(a, b):
    return a + b


def div(a, b):
    if b == 0:
        raise ZeroDivisionError("b must not be 0")
    return a / b


def unused():
    return 42
"""
# 8 statements; the "regressed" run never calls unused(): 7/8 covered

HEALTHY = """\
import pytest

from calc import add, div, unused


@pytest.mark.parametrize("n", range(10))
def test_add(n):
    assert add(n, 1) == n + 1


def test_div():
    assert div(4, 2) == 2


def test_div_by_zero():
    with pytest.raises(ZeroDivisionError):
        div(1, 0)


def test_unused():
    assert unused() == 42


@pytest.mark.skip(reason="not on CI")
def test_later():
    pass
"""

REGRESSED = """\
import pytest

from calc import add, div


@pytest.fixture
def broken():
    raise RuntimeError("fixture failed")


@pytest.mark.parametrize("n", range(15))
def test_add(n):
    assert add(n, 1) == n + 1


def test_div():
    assert div(4, 2) == 2


def test_div_by_zero():
    with pytest.raises(ZeroDivisionError):
        div(1, 0)


def test_div_rounds():
    assert div(1, 3) == 0.33


def test_uses_broken(broken):
    pass


@pytest.mark.skip(reason="not on CI")
def test_later():
    pass
"""
# 17 passed, 1 failed, 1 errored, 1 skipped: pass rate 17/19 = 0.894737


def carbontrack() -> list[str]:
    script = shutil.which("carbontrack", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "carbontrack.cli"]


def ci_run(tmp: Path, tests: str) -> Path:
    """What a CI job does: run the tests under coverage, write JUnit XML, coverage JSON and XML."""
    (tmp / "calc.py").write_text(CALC)
    (tmp / "test_calc.py").write_text(tests)
    py = [sys.executable, "-m"]
    env = {"COVERAGE_FILE": str(tmp / ".coverage"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [*py, "coverage", "run", "-m", "pytest", "test_calc.py", "--junitxml=junit.xml", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: some tests failed, as planned
    for fmt, out in (("json", "coverage.json"), ("xml", "coverage.xml")):
        report = subprocess.run(
            [*py, "coverage", fmt, "-o", out, "--include=calc.py"],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
    (tmp / "security.json").write_text(json.dumps({"critical": 0, "high": 0, "medium": 1}))
    return tmp


def gates(tmp: Path, context: str, coverage: str = "coverage.json") -> tuple[int, dict[str, object], str]:
    result = subprocess.run(
        [*carbontrack(), "gates", "check", "--context", context, "--tests", "junit.xml",
         "--coverage", coverage, "--security", "security.json", "--json", "report.json"],
        cwd=tmp, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads((tmp / "report.json").read_text()), result.stdout


def verdicts(report: dict[str, object]) -> dict[str, tuple[bool, object]]:
    gates = report["gates"]
    assert isinstance(gates, list)
    return {g["name"]: (g["passed"], g["observed"]) for g in gates}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_run(tmp_path_factory.mktemp("healthy"), HEALTHY)


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_run(tmp_path_factory.mktemp("regressed"), REGRESSED)


@pytest.mark.parametrize("context", ["development", "staging", "production"])
def test_a_healthy_run_passes_in_every_context(healthy: Path, context: str) -> None:
    code, report, out = gates(healthy, context)
    assert code == 0, out
    got = verdicts(report)
    assert got["tests.passRate"] == (True, 1.0)  # 13 passed, the skipped one counts in neither
    assert got["tests.coverage"] == (True, 1.0)
    assert report["inputs"] == [
        {"flag": "--tests", "path": "junit.xml", "format": "JUnit XML",
         "detail": "13 passed, 0 failed, 0 errored, 1 skipped"},
        {"flag": "--coverage", "path": "coverage.json", "format": "coverage.py JSON",
         "detail": "100% covered"},
        {"flag": "--security", "path": "security.json", "format": "results.json",
         "detail": "0 critical, 0 high, 1 medium"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("context", "code", "pass_rate_ok", "coverage_ok"),
    [
        ("development", 0, True, True),  # 0.8947 >= 0.80, 0.875 >= 0.60
        ("staging", 1, False, True),  # 0.8947 < 0.95, 0.875 >= 0.80
        ("production", 1, False, False),  # 0.8947 < 0.98, 0.875 < 0.90
    ],
)
@pytest.mark.parametrize("coverage", ["coverage.json", "coverage.xml"])
def test_a_regressed_run_is_judged_per_context(
    regressed: Path, context: str, code: int, pass_rate_ok: bool, coverage_ok: bool, coverage: str
) -> None:
    got_code, report, out = gates(regressed, context, coverage)
    assert got_code == code, out
    got = verdicts(report)
    assert got["tests.passRate"] == (pass_rate_ok, pytest.approx(17 / 19))
    assert got["tests.coverage"] == (coverage_ok, 0.875)
    assert report["exitCode"] == code and report["context"] == context
    tests_input = report["inputs"][0]  # type: ignore[index]
    assert tests_input["detail"] == "17 passed, 1 failed, 1 errored, 1 skipped"


def test_an_unset_ci_variable_is_a_usage_error_not_a_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        [*carbontrack(), "gates", "check", "--tests", "", "--security", ""],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "carbontrack gates: unusable input: --tests: expected a file path, got an empty string "
        "(an unset CI variable?)\n"
    )
