"""Aggregation: totals equal the sum of final cumulative counters, whatever the delivery did."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.api.wire import GpuCounter, ObjectRef, PodRef, StepRecord, TelemetryBatch
from carbontrack.core.aggregation import JobAggregate, Verdict
from carbontrack.core.emissions import emissions_g

PUE, INTENSITY = 1.2, 381.0


def batch(
    pod: str,
    boot: str,
    seq: int,
    joules: list[float],
    step: int = 0,
    sent_at: float | None = None,
    records: list[StepRecord] | None = None,
) -> TelemetryBatch:
    return TelemetryBatch(
        job=ObjectRef(namespace="ml", name="llama"),
        pod=PodRef(namespace="ml", name=pod),
        boot_id=boot,
        seq=seq,
        sent_at=1000.0 + seq if sent_at is None else sent_at,
        method="simulated",
        gpus=[GpuCounter(index=i, energy_joules=j) for i, j in enumerate(joules)],
        steps_seen=step,
        global_step=step,
        steps=records or [],
    )


def test_emissions_formula() -> None:
    assert emissions_g(3_600_000, 1.0, 400) == 400.0
    assert emissions_g(1_800_000, 1.5, 200) == pytest.approx(150.0)


def test_duplicated_reordered_lost_and_replayed_batches_keep_the_total_exact() -> None:
    stream = [batch("p0", "b1", s, [100.0 * s, 50.0 * s], step=s) for s in range(1, 11)]
    other = [batch("p1", "b1", s, [70.0 * s], step=s) for s in range(1, 11)]
    rng = random.Random(5)
    deliveries = [b for b in stream + other if rng.random() > 0.3]  # some lost
    deliveries += rng.sample(deliveries, 5)  # some duplicated
    rng.shuffle(deliveries)  # all reordered
    deliveries += [stream[-1], other[-1]]  # the final ones arrive (last)
    agg = JobAggregate()
    for b in deliveries:
        agg.apply(b, pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert agg.energy_j == 1000.0 + 500.0 + 700.0
    assert agg.emissions_g == pytest.approx(emissions_g(2200.0, PUE, INTENSITY), rel=1e-12)
    assert agg.global_step == 10


def test_replay_is_a_duplicate_and_changes_nothing() -> None:
    agg = JobAggregate()
    first = batch("p0", "b1", 1, [10.0])
    assert agg.apply(first, pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is Verdict.ACCEPTED
    assert agg.apply(first, pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is Verdict.DUPLICATE
    assert agg.energy_j == 10.0


def test_a_new_boot_adds_on_and_keeps_the_old_energy() -> None:
    agg = JobAggregate()
    agg.apply(batch("p0", "boot-a", 5, [500.0]), pue=PUE, intensity_g_per_kwh=INTENSITY)
    agg.apply(batch("p0", "boot-b", 1, [20.0]), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert agg.energy_j == 520.0


def test_decreasing_counters_and_steps_are_refused() -> None:
    agg = JobAggregate()
    agg.apply(batch("p0", "b", 1, [100.0], step=5), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert agg.apply(batch("p0", "b", 2, [90.0], step=6), pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is (
        Verdict.BACKWARDS
    )
    assert agg.apply(
        batch("p0", "b", 3, [110.0], step=4), pue=PUE, intensity_g_per_kwh=INTENSITY
    ).verdict is (Verdict.BACKWARDS)
    assert agg.apply(batch("p0", "b", 4, [1e12], step=7), pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is (
        Verdict.ABSURD
    )
    assert agg.energy_j == 100.0


def test_emissions_use_the_intensity_in_force_when_energy_arrived() -> None:
    agg = JobAggregate()
    agg.apply(batch("p0", "b", 1, [3_600_000.0]), pue=1.0, intensity_g_per_kwh=100)
    agg.apply(batch("p0", "b", 2, [7_200_000.0], sent_at=5000), pue=1.0, intensity_g_per_kwh=300)
    assert agg.emissions_g == pytest.approx(400.0)  # 1 kWh at 100 + 1 kWh at 300, not 2 kWh at 300


def test_step_records_counted_once_and_projection() -> None:
    agg = JobAggregate()
    recs = [
        StepRecord(step=s, first_step=s - 1, energy_joules=10.0, duration_s=0.5, ended_at=1) for s in (1, 2)
    ]
    agg.apply(batch("p0", "b", 1, [20.0], step=2, records=recs), pue=PUE, intensity_g_per_kwh=INTENSITY)
    agg.apply(batch("p0", "b", 2, [20.0], step=2, records=recs), pue=PUE, intensity_g_per_kwh=INTENSITY)
    src = agg.sources[("p0", "b")]
    assert len(src.records) == 2 and src.joules_per_step() == 10.0 and src.steps_per_s() == 2.0
    proj = agg.projection(total_steps=102, pue=1.0, intensity_g_per_kwh=360)
    assert proj == (20.0 + 1000.0, pytest.approx(emissions_g(20.0, PUE, INTENSITY) + 0.1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p0", "p1", "p2"]),
            st.sampled_from(["a", "b"]),
            st.integers(1, 30),
            st.floats(0, 500, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_delivery_order_totals_the_newest_counters(events: list[tuple[str, str, int, float]]) -> None:
    """Counters grow with seq per source; deliver any subset in any order: total = newest per source."""
    agg = JobAggregate()
    newest: dict[tuple[str, str], tuple[int, float]] = {}
    for pod, boot, seq, _ in events:
        joules = 10.0 * seq  # cumulative counter: a function of seq, so always monotone per source
        agg.apply(
            batch(pod, boot, seq, [joules], sent_at=1000.0 + 100 * seq),
            pue=PUE,
            intensity_g_per_kwh=INTENSITY,
        )
        if (pod, boot) not in newest or seq > newest[(pod, boot)][0]:
            newest[(pod, boot)] = (seq, joules)
    # out-of-order delivery can only make the *newest seen* count; any later lower seq is a duplicate
    assert agg.energy_j == pytest.approx(sum(j for _, j in newest.values()))
