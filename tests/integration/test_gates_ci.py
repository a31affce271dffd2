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

IMPORTS_EMPTY = """\
import empty


def test_imports():
    assert empty.__name__ == "empty"
"""
# empty.py has no statement: coverage.py reports it as 100% of 0 statements


def carbontrack() -> list[str]:
    script = shutil.which("carbontrack", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "carbontrack.cli"]


def ci_run(tmp: Path, tests: str, module: str = "calc", source: str = CALC) -> Path:
    """What a CI job does: run the tests under coverage, write JUnit XML, coverage JSON and XML."""
    (tmp / f"{module}.py").write_text(source)
    (tmp / f"test_{module}.py").write_text(tests)
    py = [sys.executable, "-m"]
    env = {"COVERAGE_FILE": str(tmp / ".coverage"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [*py, "coverage", "run", "-m", "pytest", f"test_{module}.py", "--junitxml=junit.xml", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: some tests failed, as planned
    for fmt, out in (("json", "coverage.json"), ("xml", "coverage.xml")):
        report = subprocess.run(
            [*py, "coverage", fmt, "-o", out, f"--include={module}.py"],
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


@pytest.fixture(scope="module")
def no_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ci_run(tmp_path_factory.mktemp("no_code"), IMPORTS_EMPTY, "empty", "")


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


NO_CODE = "(a report over no code is no data, not 100% coverage), got 0"


@pytest.mark.parametrize("context", ["development", "production"])
@pytest.mark.parametrize(
    ("coverage", "message"),
    [
        (
            "coverage.json",
            f"coverage.json: totals.num_statements: expected at least one statement measured {NO_CODE}",
        ),
        (
            "coverage.xml",
            f"coverage.xml: <coverage lines-valid>: expected at least one line measured {NO_CODE}",
        ),
    ],
)
def test_coverage_over_no_code_is_unusable_input_not_full_coverage(
    no_code: Path, context: str, coverage: str, message: str
) -> None:
    code, report, out = gates(no_code, context, coverage)
    assert code == 2, out
    assert report["error"] == message and report["exitCode"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tests", "."], "unusable input: .: is a directory, expected a file (given with --tests)"),
        (["--tests", "huge.xml"],
         "unusable input: huge.xml: expected a file of at most 20 MiB (20,971,520 bytes; "
         "given with --tests), got 52,428,800 bytes"),
        (["--security", "deep.json"],
         "unusable input: deep.json: line 1 column 202: expected JSON with no value inside more than "
         "200 nested arrays or objects, got deeper nesting"),
        (["--metrics", "m.json", "--metric", "acc", "--min-score", "inf"],  # passed every score
         "argument --min-score: expected a finite number, got 'inf'"),
        (["--metrics", "m.json", "--metric", "acc", "--min-score", "nan"],  # failed every score: exit 1
         "argument --min-score: expected a finite number, got 'nan'"),
    ],
    ids=["directory", "over-the-size-cap", "nested-too-deep", "min-score-inf", "min-score-nan"],
)  # fmt: skip
def test_unusable_input_exits_two_from_the_installed_command(
    healthy: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    """A directory, a 50 MB file (sparse: stat refuses it before any read), 100,000 nested `[`, thresholds
    that are not finite numbers, each beside real reports, in the development context that passes them."""
    shutil.copy(healthy / "junit.xml", tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"acc": 0.9}))
    with open(tmp_path / "huge.xml", "wb") as huge:
        huge.truncate(50 * 1024 * 1024)
    (tmp_path / "deep.json").write_text("[" * 100_000)
    result = subprocess.run(
        [*carbontrack(), "gates", "check", "--context", "development", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
