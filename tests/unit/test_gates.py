"""Gates: exact verdicts per context; missing data fails closed in production, warns in development."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.gates import PROFILES, Evidence, TestResults, judge, profile_for
from tests.cases.crs import valid_spec

GOOD = Evidence(
    metrics={"eval_accuracy": 0.815, "latency_ms": 105.0},
    tests=TestResults(pass_rate=0.99, coverage=0.91, critical=0, high=0, medium=2),
    epsilon_projected=7.5,
    emissions_projected_g=39_000.0,
)


def spec(context: str = "production", **gates: object) -> CarbonTrackedJobSpec:
    raw = valid_spec()
    raw["gates"]["context"] = context
    raw["gates"]["quality"]["baselineLatencyMs"] = 100.0
    raw["gates"]["quality"]["maxRegression"] = 0.01
    raw["gates"].update(gates)
    return CarbonTrackedJobSpec.model_validate(raw)


def test_default_profiles_are_the_documented_ones() -> None:
    assert (PROFILES["development"].min_pass_rate, PROFILES["staging"].min_pass_rate) == (0.80, 0.95)
    assert PROFILES["production"].min_pass_rate == 0.98
    assert [PROFILES[c].min_coverage for c in ("development", "staging", "production")] == [0.60, 0.80, 0.90]


def test_everything_good_passes_in_production() -> None:
    report = judge(spec(), GOOD)
    assert report.all_passed(), report.failed()
    assert [r.name for r in report.results] == [
        "quality.score", "quality.regression", "quality.latency", "tests.passRate", "tests.coverage",
        "security.critical", "security.high", "security.medium", "privacy.epsilon", "carbon.budget",
    ]  # fmt: skip
    assert report.summary() == "10/10 passed"


@pytest.mark.parametrize(
    ("change", "gate", "observed", "threshold"),
    [
        (
            {"metrics": {"eval_accuracy": 0.805, "latency_ms": 105.0}},
            "quality.regression",
            pytest.approx(0.015),
            0.01,
        ),
        (
            {"metrics": {"eval_accuracy": 0.815, "latency_ms": 111.0}},
            "quality.latency",
            pytest.approx(0.11),
            0.10,
        ),
        ({"tests": TestResults(0.97, 0.91, 0, 0, 2)}, "tests.passRate", 0.97, 0.98),
        ({"tests": TestResults(0.99, 0.89, 0, 0, 2)}, "tests.coverage", 0.89, 0.90),
        ({"tests": TestResults(0.99, 0.91, 1, 0, 2)}, "security.critical", 1, 0),
        ({"epsilon_projected": 8.01}, "privacy.epsilon", 8.01, 8.0),
        ({"emissions_projected_g": 40_001.0}, "carbon.budget", 40_001.0, 40_000.0),
    ],
)
def test_each_gate_fails_with_observed_and_threshold(
    change: dict, gate: str, observed: object, threshold: float
) -> None:
    from dataclasses import replace

    report = judge(spec(), replace(GOOD, **change))
    failed = report.failed()
    assert [f.name for f in failed] == [gate]
    assert failed[0].observed == observed and failed[0].threshold == pytest.approx(threshold)
    assert report.summary() == f"{gate} failed"


def test_a_score_below_the_floor_fails_score_and_regression() -> None:
    from dataclasses import replace

    report = judge(spec(), replace(GOOD, metrics={"eval_accuracy": 0.79, "latency_ms": 105.0}))
    assert [(f.name, f.observed) for f in report.failed()] == [
        ("quality.score", 0.79),
        ("quality.regression", pytest.approx(0.03)),
    ]
    assert report.summary() == "quality.score failed (+1)"


def test_missing_data_fails_closed_in_production_and_warns_in_development() -> None:
    prod = judge(spec("production"), Evidence())
    assert not prod.all_passed() and all("failing closed" in r.message for r in prod.failed())
    dev = judge(spec("development"), Evidence())
    assert dev.all_passed() and all(r.warning for r in dev.results)
    assert dev.summary() == "10/10 passed, 10 warned"


def test_development_thresholds_are_looser_and_spec_overrides_win() -> None:
    evidence = Evidence(
        metrics=GOOD.metrics,
        tests=TestResults(0.85, 0.65, 0, 3, 10),
        epsilon_projected=1,
        emissions_projected_g=1,
    )
    assert judge(spec("development"), evidence).all_passed()
    assert not judge(spec("staging"), evidence).all_passed()
    strict = spec("development", thresholds={"minPassRate": 0.9})
    assert [r.name for r in judge(strict, evidence).failed()] == ["tests.passRate"]
    assert profile_for("development", None) is PROFILES["development"]


def test_claimed_epsilon_is_shown_beside_the_recomputed_one() -> None:
    from dataclasses import replace

    report = judge(spec(), replace(GOOD, epsilon_claimed=2.0))
    privacy = next(r for r in report.results if r.name == "privacy.epsilon")
    assert privacy.observed == 7.5 and "claims 2" in privacy.message
