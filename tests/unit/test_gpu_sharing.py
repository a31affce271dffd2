"""GPU sharing and uncertainty from batch to status and gates: board energy never billed silently."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec, CarbonTrackedJobStatus
from carbontrack.api.wire import GpuCounter, Method, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt, SourceGpu
from carbontrack.core.accounting.measurement import measurement_events
from carbontrack.core.gates.judgement import Evidence, judge
from carbontrack.intensity.static import Intensity
from carbontrack.state.status import restore, telemetry_update
from tests.cases.batches import telemetry_batch
from tests.cases.crs import merged_spec

PUE, INTENSITY = 1.2, 381.0
RECEIPT = Receipt(received_at=1002.0, pod_started_at=0.0, gpus=8)


def batch(
    pod: str, seq: int, gpus: list[GpuCounter], method: Method = "energy-counter", reason: str = ""
) -> TelemetryBatch:
    return telemetry_batch(pod, f"b-{pod}", seq, gpus=gpus, method=method, method_reason=reason)


def gpu(
    index: int, joules: float, sharing: str = "exclusive", unc: float = 0.0, foreign: int = 0
) -> GpuCounter:
    return GpuCounter(
        index=index, uuid=f"GPU-{index}", energy_joules=joules, sharing=sharing,  # type: ignore[arg-type]
        uncertainty_joules=unc, foreign_processes=foreign,
    )  # fmt: skip


def aggregate() -> JobAggregate:
    agg = JobAggregate()
    agg.apply(
        batch("p0", 1, [gpu(0, 1000.0, unc=70.0), gpu(1, 500.0, "mig", unc=30.0)]),
        RECEIPT,
        pue=PUE,
        intensity_g_per_kwh=INTENSITY,
    )
    agg.apply(
        batch("p1", 1, [gpu(0, 800.0, "shared", unc=10.0, foreign=2)]),
        RECEIPT,
        pue=PUE,
        intensity_g_per_kwh=INTENSITY,
    )
    agg.apply(
        batch("p2", 1, [], "unavailable", "mismatched GPU UUIDs: ..."),
        RECEIPT,
        pue=PUE,
        intensity_g_per_kwh=INTENSITY,
    )
    return agg


def test_upper_bound_and_shared_energy_are_exact_sums() -> None:
    agg = aggregate()
    assert agg.energy_j == 2300.0
    assert agg.energy_upper_bound_j == 2300.0 + 110.0
    assert agg.shared_energy_j == 1300.0


def test_status_lists_gpus_shared_first_and_bounded() -> None:
    agg = aggregate()
    assert agg.gpus(limit=2) == [
        ("p0", SourceGpu(1, "GPU-1", "mig", "energy-counter", 0)),
        ("p1", SourceGpu(0, "GPU-0", "shared", "energy-counter", 2)),
    ]
    body = telemetry_update(agg, Intensity(INTENSITY, "DE", "static"), 1002.0)["status"]
    assert body["energyJoulesUpperBound"] == 2410.0 and body["sharedGpuEnergyJoules"] == 1300.0
    assert [(g["pod"], g["uuid"], g["sharing"]) for g in body["gpus"]] == [
        ("p0", "GPU-1", "mig"), ("p1", "GPU-0", "shared"), ("p0", "GPU-0", "exclusive"),
    ]  # fmt: skip
    status = CarbonTrackedJobStatus.model_validate(body)  # the typed boundary takes what we write
    back = restore(status)
    assert (
        back.energy_upper_bound_j == agg.energy_upper_bound_j and back.shared_energy_j == agg.shared_energy_j
    )
    assert [(g.uuid, g.sharing) for g in back.sources[("p0", "b-p0")].gpus] == [
        ("GPU-0", "exclusive"),
        ("GPU-1", "mig"),
    ]
    assert back.sources[("p2", "b-p2")].method_reason == "mismatched GPU UUIDs: ..."


def test_sharing_and_unmeasured_pods_are_announced_once() -> None:
    agg = aggregate()
    said: set[tuple[str, str, str]] = set()
    events = measurement_events(agg, said)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "MigGpuEnergy"), ("Warning", "SharedGpuEnergy"), ("Warning", "EnergyUnmeasured"),
    ]  # fmt: skip
    assert "GPU GPU-0 of pod p1 also runs 2 process(es) not of this job" in events[1].message
    assert "acceptSharedGpuEnergy" in events[0].message
    assert events[2].message == "pod p2 measures no energy: mismatched GPU UUIDs: ..."
    assert measurement_events(agg, said) == []


def spec(context: str, accept: bool = False, budget_kg: float = 40.0) -> CarbonTrackedJobSpec:
    raw = merged_spec(carbon={"budgetKg": budget_kg, "acceptSharedGpuEnergy": accept})
    return CarbonTrackedJobSpec.model_validate(raw | {"gates": {"context": context}})


@pytest.mark.parametrize(
    ("context", "accept", "passed", "warning", "message"),
    [
        ("production", False, False, False, "unmeasured: 1300 J of the energy is board energy"),
        ("staging", False, False, False, "unmeasured: 1300 J"),
        ("development", False, True, True, "projected gCO2e at step 20000 39000 <= 40000; 1300 J"),
        ("production", True, True, False, "(upper bound) 39500 <= 40000"),
        ("staging", True, True, False, "projected gCO2e at step 20000 39000 <= 40000"),
    ],
)
def test_board_energy_of_a_shared_gpu_is_unmeasured_unless_accepted(
    context: str, accept: bool, passed: bool, warning: bool, message: str
) -> None:
    evidence = Evidence(
        emissions_projected_g=39_000.0, emissions_projected_upper_g=39_500.0, shared_gpu_energy_j=1300.0
    )
    (result,) = judge(spec(context, accept), evidence).results
    assert (result.name, result.passed, result.warning) == ("carbon.budget", passed, warning)
    assert message in result.message, result.message


def test_production_judges_the_upper_bound() -> None:
    evidence = Evidence(emissions_projected_g=39_000.0, emissions_projected_upper_g=40_100.0)
    (prod,) = judge(spec("production"), evidence).results
    (staging,) = judge(spec("staging"), evidence).results
    assert (prod.passed, prod.observed) == (False, 40_100.0)
    assert (staging.passed, staging.observed) == (True, 39_000.0)


def test_projection_upper_scales_by_the_stated_uncertainty() -> None:
    agg = JobAggregate()
    agg.apply(batch("p0", 1, [gpu(0, 1000.0, unc=100.0)]), RECEIPT, pue=PUE, intensity_g_per_kwh=INTENSITY)
    agg.sources[("p0", "b-p0")].records.append((10, 1000.0, 10.0))
    projected = agg.projection(100, PUE, INTENSITY)
    assert projected is not None
    assert agg.projection_upper_g(100, PUE, INTENSITY) == pytest.approx(projected[1] * 1.1)
