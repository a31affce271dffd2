"""Aggregation: totals equal the sum of final cumulative counters, whatever the delivery did."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.api.wire import StepRecord, TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt, Verdict
from carbontrack.core.accounting.emissions import emissions_g
from carbontrack.core.accounting.sources import WINDOW, StepWindow
from tests.cases.batches import telemetry_batch

PUE, INTENSITY = 1.2, 381.0
KW = {"pue": PUE, "intensity_g_per_kwh": INTENSITY}


def batch(
    pod: str,
    boot: str,
    seq: int,
    joules: list[float],
    step: int = 0,
    sent_at: float | None = None,
    records: list[StepRecord] | None = None,
) -> TelemetryBatch:
    return telemetry_batch(
        pod, boot, seq, joules=joules, sent_at=sent_at, steps_seen=step, global_step=step, steps=records or []
    )


def fold(agg: JobAggregate, b: TelemetryBatch, *, pue: float, intensity_g_per_kwh: float) -> Applied:
    """Apply as received when sent, from a pod started long ago holding the batch's GPUs: the rules that
    do not trust the sender have their own tests below."""
    receipt = Receipt(received_at=b.sent_at, pod_started_at=-1e9, gpus=max(len(b.gpus), 1))
    return agg.apply(b, receipt, pue=pue, intensity_g_per_kwh=intensity_g_per_kwh)


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
        fold(agg, b, pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert agg.energy_j == 1000.0 + 500.0 + 700.0
    assert agg.emissions_g == pytest.approx(emissions_g(2200.0, PUE, INTENSITY), rel=1e-12)
    assert agg.global_step == 10


def test_replay_is_a_duplicate_and_changes_nothing() -> None:
    agg = JobAggregate()
    first = batch("p0", "b1", 1, [10.0])
    assert fold(agg, first, pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is Verdict.ACCEPTED
    assert fold(agg, first, pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is Verdict.DUPLICATE
    assert agg.energy_j == 10.0


def test_a_new_boot_adds_on_and_keeps_the_old_energy() -> None:
    agg = JobAggregate()
    fold(agg, batch("p0", "boot-a", 5, [500.0]), pue=PUE, intensity_g_per_kwh=INTENSITY)
    fold(agg, batch("p0", "boot-b", 1, [20.0]), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert agg.energy_j == 520.0


def test_decreasing_counters_and_steps_are_refused_and_energy_counts_whatever_the_steps() -> None:
    """Steps that fall within a boot are refused when the batch adds no energy; one that adds energy counts
    whatever its steps (a trainer resumed from a checkpoint sends lower steps, and a token holder's claim
    of a huge step under the sidecar's boot id must not make its later batches backwards)."""
    agg = JobAggregate()
    fold(agg, batch("p0", "b", 1, [100.0], step=5), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert fold(agg, batch("p0", "b", 2, [90.0], step=6), pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is (
        Verdict.BACKWARDS
    )
    assert fold(
        agg, batch("p0", "b", 3, [100.0], step=4), pue=PUE, intensity_g_per_kwh=INTENSITY
    ).verdict is (Verdict.BACKWARDS)
    assert fold(agg, batch("p0", "b", 4, [1e12], step=7), pue=PUE, intensity_g_per_kwh=INTENSITY).verdict is (
        Verdict.ABSURD
    )
    assert agg.energy_j == 100.0
    resumed = fold(agg, batch("p0", "b", 5, [110.0], step=4), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert (resumed.verdict, resumed.energy_j, agg.global_step) == (Verdict.ACCEPTED, 10.0, 4)


def test_emissions_use_the_intensity_in_force_when_energy_arrived() -> None:
    agg = JobAggregate()
    fold(agg, batch("p0", "b", 1, [3_600_000.0]), pue=1.0, intensity_g_per_kwh=100)
    fold(agg, batch("p0", "b", 2, [7_200_000.0], sent_at=5000), pue=1.0, intensity_g_per_kwh=300)
    assert agg.emissions_g == pytest.approx(400.0)  # 1 kWh at 100 + 1 kWh at 300, not 2 kWh at 300


def test_step_records_counted_once_and_projection() -> None:
    agg = JobAggregate()
    recs = [
        StepRecord(step=s, first_step=s - 1, energy_joules=10.0, duration_s=0.5, ended_at=1) for s in (1, 2)
    ]
    fold(agg, batch("p0", "b", 1, [20.0], step=2, records=recs), pue=PUE, intensity_g_per_kwh=INTENSITY)
    fold(agg, batch("p0", "b", 2, [20.0], step=2, records=recs), pue=PUE, intensity_g_per_kwh=INTENSITY)
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
        fold(
            agg,
            batch(pod, boot, seq, [joules], sent_at=1000.0 + 100 * seq),
            pue=PUE,
            intensity_g_per_kwh=INTENSITY,
        )
        if (pod, boot) not in newest or seq > newest[(pod, boot)][0]:
            newest[(pod, boot)] = (seq, joules)
    # out-of-order delivery can only make the *newest seen* count; any later lower seq is a duplicate
    assert agg.energy_j == pytest.approx(sum(j for _, j in newest.values()))


def test_a_fresh_boot_id_cannot_inject_energy() -> None:
    """The pod's sources together stay under its GPUs x 5 kW since it started (+5 s clock slack)."""
    pod_up = Receipt(received_at=1010.0, pod_started_at=1000.0, gpus=1)  # 5000 W x (10 + 5) s = 75 kJ
    assert pod_up.pod_ceiling_j == 75_000.0
    agg = JobAggregate()
    honest = fold(agg, batch("p0", "a", 1, [50_000.0]), pue=PUE, intensity_g_per_kwh=INTENSITY)
    assert honest.verdict is Verdict.ACCEPTED
    attack = agg.apply(batch("p0", "evil", 1, [1e14]), pod_up, **KW)
    assert attack.verdict is Verdict.IMPLAUSIBLE and "75000 J" in attack.message
    # every boot id of the pod counts: 50 kJ + 25,000.01 J is over, 50 kJ + 25 kJ is not
    over = agg.apply(batch("p0", "b", 1, [25_000.01]), pod_up, **KW)
    assert over.verdict is Verdict.IMPLAUSIBLE
    exact = agg.apply(batch("p0", "b", 2, [25_000.0]), pod_up, **KW)
    assert exact.verdict is Verdict.ACCEPTED
    assert agg.energy_j == 75_000.0 and agg.refused == {"implausible": 2}
    # another pod has its own ceiling; more GPUs, a higher one
    eight = Receipt(received_at=1010.0, pod_started_at=1000.0, gpus=8)
    assert agg.apply(batch("p1", "a", 1, [600_000.0]), eight, **KW).verdict is Verdict.ACCEPTED


def test_a_pod_not_yet_started_by_the_operators_clock_gets_only_the_slack() -> None:
    early = Receipt(received_at=990.0, pod_started_at=1000.0, gpus=2)  # node clock 10 s ahead
    assert early.pod_ceiling_j == 2 * 5000.0 * 5.0
    agg = JobAggregate()
    assert agg.apply(batch("p0", "a", 1, [50_000.0]), early, **KW).verdict is Verdict.ACCEPTED
    assert agg.apply(batch("p0", "a", 2, [50_001.0]), early, **KW).verdict is Verdict.IMPLAUSIBLE


def test_the_senders_clock_and_gpu_list_buy_nothing() -> None:
    """Rate = growth / time between arrivals on the operator's clock, ceiling from the pod's GPUs."""
    old_pod = -1e10  # the pod ceiling (5e13 J) is not what refuses here
    agg = JobAggregate()
    first = Receipt(received_at=1000.0, pod_started_at=old_pod, gpus=1)
    assert agg.apply(batch("p0", "a", 1, [100.0]), first, **KW).verdict is Verdict.ACCEPTED
    # sentAt a century ahead: the old check divided 1e13 J by that and found it plausible
    future = batch("p0", "a", 2, [1e13], sent_at=1e11)
    second = Receipt(received_at=1001.0, pod_started_at=old_pod, gpus=1)
    refused = agg.apply(future, second, **KW)
    assert refused.verdict is Verdict.ABSURD
    # 64 GPUs listed, 1 held: refused for the list itself, whatever the energy
    many = batch("p0", "a", 3, [100.0 + 6000.0 / 64] * 64)
    refused = agg.apply(many, second, **KW)
    assert refused.verdict is Verdict.TOO_MANY_GPUS and "lists 64 GPUs; pod p0 holds 1" in refused.message
    # two batches arriving together divide by 1 s, not 0; 4999 J is under 5 kW
    ok = agg.apply(batch("p0", "a", 4, [5099.0]), second, **KW)
    assert ok.verdict is Verdict.ACCEPTED
    assert agg.energy_j == 5099.0 and agg.refused == {"absurd": 1, "too_many_gpus": 1}
    src = agg.sources[("p0", "a")]
    assert src.received_at == 1001.0 and src.power_w == 4999.0  # W over the operator's 1 s
    assert agg.power_w(now=1031.0) == 4999.0 and agg.power_w(now=1031.5) == 0.0  # 30 s horizon, our clock


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 100), st.floats(0, 1e6), st.floats(0, 1e3)), max_size=700))
def test_the_step_window_keeps_the_sums_of_its_newest_records(
    records: list[tuple[int, float, float]],
) -> None:
    """Running sums equal the sums of the newest WINDOW records: steps exactly, floats to
    rounding (exactly, before the first eviction)."""
    window = StepWindow()
    for r in records:
        window.append(r)
    newest = records[-WINDOW:]
    assert list(window) == newest and window.steps == sum(r[0] for r in newest)
    expected_j, expected_s = sum(r[1] for r in newest), sum(r[2] for r in newest)
    if len(records) <= WINDOW:
        assert (window.joules, window.seconds) == (expected_j, expected_s)
    assert window.joules == pytest.approx(expected_j, rel=1e-9, abs=1e-3)
    assert window.seconds == pytest.approx(expected_s, rel=1e-9, abs=1e-6)
