"""Energy per quality: J and gCO2e per unit of the quality metric gained since its first report."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec, CarbonTrackedJobStatus, EfficiencyStatus
from carbontrack.api.wire import EvalReport, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt
from carbontrack.core.accounting.efficiency import efficiency
from carbontrack.core.gates.judgement import Evidence, judge
from carbontrack.intensity.static import lookup
from carbontrack.state import status as st
from tests.cases.batches import telemetry_batch
from tests.cases.crs import valid_spec

PUE, INTENSITY = 1.0, 360.0  # 1 kWh (3.6 MJ) -> 360 g


def batch(seq: int, joules: float, evals: dict[int, float]) -> TelemetryBatch:
    return telemetry_batch(
        seq=seq,
        joules=[joules],
        evals=[EvalReport(step=s, metrics={"eval_accuracy": v}) for s, v in evals.items()],
    )


def run(*batches: tuple[float, dict[int, float]]) -> JobAggregate:
    agg = JobAggregate()
    for seq, (joules, evals) in enumerate(batches, start=1):
        receipt = Receipt(received_at=1e9 + seq * 1e4, pod_started_at=0.0, gpus=64)
        agg.apply(batch(seq, joules, evals), receipt, pue=PUE, intensity_g_per_kwh=INTENSITY)
    return agg


def spec(
    higher: bool = True, limit: float | None = None, context: str = "production"
) -> CarbonTrackedJobSpec:
    raw = valid_spec()
    raw["gates"]["context"] = context
    raw["gates"]["quality"]["higherIsBetter"] = higher
    if not higher:
        raw["gates"]["quality"] = {"metric": "eval_accuracy", "minScore": 1.0, "higherIsBetter": False}
    if limit is not None:
        raw["carbon"]["maxGramsPerMetricPoint"] = limit
    return CarbonTrackedJobSpec.model_validate(raw)


def test_first_report_is_the_reference_with_the_energy_when_it_arrived() -> None:
    agg = run((3.6e6, {100: 0.70}), (10.8e6, {300: 0.78}))
    assert agg.first_evals == {"eval_accuracy": (100, 0.70, 3.6e6, 360.0)}
    e = efficiency(spec().gates.quality, agg)
    assert e is not None
    assert e.model_dump() == pytest.approx(
        EfficiencyStatus(
            metric="eval_accuracy", reference_step=100, reference_value=0.70, step=300, value=0.78,
            gain=0.08, energy_joules=7.2e6, emissions_grams=720.0,
            joules_per_metric_point=9e7, grams_per_metric_point=9000.0,
        ).model_dump()
    )  # fmt: skip


@pytest.mark.parametrize(
    ("higher", "first", "later", "gain", "g_per_point"),
    [
        (True, 0.70, 0.80, 0.10, 7200.0),
        (False, 2.0, 1.5, 0.5, 1440.0),  # a loss: lower is better, a fall is a gain
        (True, 0.80, 0.80, 0.0, None),  # no gain: no finite rate
        (True, 0.80, 0.75, -0.05, None),
    ],
)
def test_gain_follows_the_metric_direction(
    higher: bool, first: float, later: float, gain: float, g_per_point: float | None
) -> None:
    agg = run((3.6e6, {10: first}), (10.8e6, {20: later}))
    e = efficiency(spec(higher).gates.quality, agg)
    assert e is not None
    assert e.gain == pytest.approx(gain)
    assert e.grams_per_metric_point == (None if g_per_point is None else pytest.approx(g_per_point))


def test_no_rate_from_a_single_report_or_without_a_quality_gate() -> None:
    agg = run((3.6e6, {10: 0.7}))
    assert efficiency(spec().gates.quality, agg) is None
    assert efficiency(None, run((3.6e6, {10: 0.7}), (7.2e6, {20: 0.8}))) is None


def test_reference_survives_a_restart_through_status() -> None:
    agg = run((3.6e6, {100: 0.70}), (10.8e6, {300: 0.78}))
    status = CarbonTrackedJobStatus.model_validate(st.telemetry_update(agg, lookup("DE"), 1e9)["status"])
    assert status.evidence is not None
    assert [m.model_dump() for m in status.evidence.first_metrics] == [
        {
            "name": "eval_accuracy",
            "step": 100,
            "value": 0.70,
            "energy_joules": 3.6e6,
            "emissions_grams": 360.0,
        }
    ]
    again = st.restore(status)
    assert again.first_evals == agg.first_evals
    assert efficiency(spec().gates.quality, again) == efficiency(spec().gates.quality, agg)


def _gate(limit: float, agg: JobAggregate, context: str = "production", measured: bool = True) -> object:
    s = spec(limit=limit, context=context)
    evidence = Evidence(efficiency=efficiency(s.gates.quality, agg), energy_measured=measured)
    return next(r for r in judge(s, evidence).results if r.name == "carbon.perMetricPoint")


@pytest.mark.parametrize(
    ("limit", "batches", "context", "measured", "passed", "warning", "observed", "message"),
    [
        (9000.0, [(3.6e6, {1: 0.70}), (10.8e6, {2: 0.78})], "production", True, True, False, 9000.0,
         "gCO2e per unit of eval_accuracy gained since step 1 9000 <= 9000"),
        (8000.0, [(3.6e6, {1: 0.70}), (10.8e6, {2: 0.78})], "production", True, False, False, 9000.0,
         "gCO2e per unit of eval_accuracy gained since step 1 9000 > 8000"),
        (8000.0, [(3.6e6, {1: 0.70}), (10.8e6, {2: 0.70})], "production", True, False, False, None,
         "eval_accuracy gained 0 since step 1: 720 gCO2e spent for no gain"),
        (8000.0, [(3.6e6, {1: 0.70})], "production", True, False, False, None,
         "the quality metric has not been reported twice yet: failing closed"),
        (8000.0, [(3.6e6, {1: 0.70})], "development", True, True, True, None,
         "the quality metric has not been reported twice yet"),
        (8000.0, [(3.6e6, {1: 0.70}), (10.8e6, {2: 0.78})], "production", False, False, False, None,
         "energy was not measured (a sidecar reports method unavailable): failing closed"),
    ],
)  # fmt: skip
def test_per_point_gate(
    limit: float, batches: list[tuple[float, dict[int, float]]], context: str, measured: bool,
    passed: bool, warning: bool, observed: float | None, message: str,
) -> None:  # fmt: skip
    r = _gate(limit, run(*batches), context, measured)
    assert (r.passed, r.warning, r.threshold, r.message) == (passed, warning, limit, message)  # type: ignore[attr-defined]
    assert r.observed == (None if observed is None else pytest.approx(observed))  # type: ignore[attr-defined]


def test_per_point_bound_needs_a_quality_gate() -> None:
    raw = valid_spec()
    del raw["gates"]["quality"]
    raw["carbon"]["maxGramsPerMetricPoint"] = 100.0
    with pytest.raises(ValueError, match=r"carbon\.maxGramsPerMetricPoint needs gates\.quality"):
        CarbonTrackedJobSpec.model_validate(raw)
