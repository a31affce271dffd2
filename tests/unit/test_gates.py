"""Gates: exact verdicts per context; missing data fails closed in production, warns in development."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.gates.judgement import PROFILES, CiResults, Evidence, judge, profile_for
from tests.cases.crs import merged_spec, valid_spec

GOOD = Evidence(
    metrics={"eval_accuracy": 0.815, "latency_ms": 105.0},
    tests=CiResults(pass_rate=0.99, coverage=0.91, critical=0, high=0, medium=2),
    epsilon_projected=7.5,
    emissions_projected_g=39_000.0,
)


def spec(context: str = "production", **gates: object) -> CarbonTrackedJobSpec:
    quality = {**valid_spec()["gates"]["quality"], "baselineLatencyMs": 100.0, "maxRegression": 0.01}
    return CarbonTrackedJobSpec.model_validate(merged_spec({"context": context, "quality": quality, **gates}))


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
        ({"tests": CiResults(0.97, 0.91, 0, 0, 2)}, "tests.passRate", 0.97, 0.98),
        ({"tests": CiResults(0.99, 0.89, 0, 0, 2)}, "tests.coverage", 0.89, 0.90),
        ({"tests": CiResults(0.99, 0.91, 1, 0, 2)}, "security.critical", 1, 0),
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
        tests=CiResults(0.85, 0.65, 0, 3, 10),
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


def throughput_memory_spec(context: str, **quality: object) -> CarbonTrackedJobSpec:
    q = {"metric": "eval_accuracy", "minScore": 0.8, "baselineSamplesPerSecond": 1000.0,
         "baselineMemoryMb": 40_000.0, **quality}  # fmt: skip
    return spec(context, quality=q)


@pytest.mark.parametrize(
    ("context", "rate", "memory", "verdicts"),
    [
        # production allows 10 % either way: 900 samples/s and 44 000 MB are exactly at the limits
        ("production", 900.0, 44_000.0, (True, True)),
        ("production", 899.0, 44_001.0, (False, False)),
        ("staging", 860.0, 45_600.0, (True, True)),  # 15 %
        ("staging", 849.0, 46_001.0, (False, False)),
        ("development", 750.0, 50_000.0, (True, True)),  # 25 %
        ("development", 1200.0, 30_000.0, (True, True)),  # faster and smaller always passes
    ],
)
def test_throughput_and_memory_regressions_use_the_context_profile(
    context: str, rate: float, memory: float, verdicts: tuple[bool, bool]
) -> None:
    ev = Evidence(metrics={"eval_accuracy": 0.9, "samples_per_second": rate, "peak_memory_mb": memory})
    results = {r.name: r for r in judge(throughput_memory_spec(context), ev).results}
    t, m = results["quality.throughput"], results["quality.memory"]
    assert (t.passed, m.passed) == verdicts
    assert t.observed == pytest.approx((1000.0 - rate) / 1000.0)
    assert m.observed == pytest.approx((memory - 40_000.0) / 40_000.0)
    assert t.threshold == PROFILES[context].max_throughput_decrease
    assert m.threshold == PROFILES[context].max_memory_increase


def test_throughput_metric_name_and_limits_come_from_the_spec() -> None:
    s = throughput_memory_spec(
        "production", throughputMetric="eval_samples_per_second", maxThroughputDecrease=0.3,
        memoryMetric="gpu_peak_mb", maxMemoryIncrease=0.0,
    )  # fmt: skip
    ev = Evidence(metrics={"eval_accuracy": 0.9, "eval_samples_per_second": 750.0, "gpu_peak_mb": 40_000.0})
    results = {r.name: r for r in judge(s, ev).results}
    assert results["quality.throughput"].passed and results["quality.throughput"].threshold == 0.3
    assert results["quality.throughput"].message == "relative eval_samples_per_second decrease 0.25 <= 0.3"
    assert results["quality.memory"].passed and results["quality.memory"].observed == 0.0


def test_missing_throughput_fails_closed_in_production() -> None:
    r = {x.name: x for x in judge(throughput_memory_spec("production"), Evidence(metrics={})).results}
    assert not r["quality.throughput"].passed
    assert (
        r["quality.throughput"].message == "no relative samples_per_second decrease reported: failing closed"
    )


def test_low_findings_are_shown_without_a_limit_and_gated_with_max_low() -> None:
    ev = Evidence(tests=CiResults(pass_rate=0.99, coverage=0.95, critical=0, high=0, medium=0, low=12))
    unlimited = {r.name: r for r in judge(spec(), ev).results}["security.low"]
    assert (unlimited.passed, unlimited.observed, unlimited.threshold) == (True, 12, None)
    assert unlimited.message == "low findings 12 (no limit: set thresholds.maxLow to gate them)"
    capped = {r.name: r for r in judge(spec(thresholds={"maxLow": 10}), ev).results}["security.low"]
    assert (capped.passed, capped.observed, capped.threshold) == (False, 12, 10)
    assert capped.message == "low findings 12 > 10"


def test_low_findings_not_reported_add_no_gate_unless_limited() -> None:
    names = [r.name for r in judge(spec(), GOOD).results]
    assert "security.low" not in names
    limited = {r.name: r for r in judge(spec(thresholds={"maxLow": 3}), GOOD).results}["security.low"]
    assert not limited.passed and limited.message == "no low findings reported: failing closed"


def test_every_context_leaves_low_findings_unlimited() -> None:
    assert [PROFILES[c].max_low for c in ("development", "staging", "production")] == [None, None, None]
