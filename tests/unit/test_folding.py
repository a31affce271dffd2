"""Bounded telemetry state: folded boots keep every total exact, replays of them change nothing, and the
caps refuse (never fold away) what would not fit. A boot folds only once it is quiet (a live window, 60 s,
without a batch): the boots here are that far apart; tests/unit/test_live_boots.py is about live ones."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.api.crd import CarbonTrackedJobStatus, SourceStatus
from carbontrack.api.wire import GpuCounter, Method, TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt, Source, SourceGpu, Verdict
from carbontrack.core.accounting.emissions import emissions_g
from carbontrack.core.accounting.folding import (
    FOLD_FIXED_BYTES,
    Limits,
    folded_id_bytes,
    source_bytes,
    text_bytes,
)
from carbontrack.intensity.static import lookup
from carbontrack.state.status import restore, telemetry_update
from carbontrack.state.telemetry_status import compact_status, source_status
from tests.cases.batches import telemetry_batch

KW = {"pue": 1.2, "intensity_g_per_kwh": 381.0}
NO_FOLDING = Limits(live_boots_per_pod=1 << 30)


def batch(
    pod: str, boot: str, seq: int, joules: float, step: int = 0, method: Method = "simulated"
) -> TelemetryBatch:
    return telemetry_batch(
        pod, boot, seq, joules=[joules], sent_at=0.0, method=method, steps_seen=step, global_step=step,
        method_reason="" if method != "unavailable" else "no NVML",
    )  # fmt: skip


def send(agg: JobAggregate, b: TelemetryBatch, at: float, started: float = -1e9) -> Applied:
    """Apply as received at `at` from a pod started at `started` that holds the GPUs the batch lists."""
    return agg.apply(b, Receipt(received_at=at, pod_started_at=started, gpus=max(len(b.gpus), 1)), **KW)


def roundtrip(agg: JobAggregate) -> JobAggregate:
    """The aggregate a restarted operator builds from the status this one wrote."""
    body = json.loads(json.dumps(telemetry_update(agg, lookup("DE"), 5000.0)))
    return restore(CarbonTrackedJobStatus.model_validate(body["status"]), agg.limits)


def compact_roundtrip(agg: JobAggregate) -> JobAggregate:
    """As roundtrip, through the compact form that a job too big for one object per source is written in."""
    written = CarbonTrackedJobStatus.model_validate(telemetry_update(agg, lookup("DE"), 5000.0)["status"])
    assert written.telemetry is not None
    ordered = sorted(agg.sources.values(), key=lambda s: (s.pod, s.boot_id))
    telemetry = written.telemetry.model_copy(update={"sources": [], "compact": compact_status(ordered)})
    body = json.loads(written.model_copy(update={"telemetry": telemetry}).model_dump_json(by_alias=True))
    return restore(CarbonTrackedJobStatus.model_validate(body), agg.limits)


def test_a_third_boot_folds_the_first_with_exact_totals() -> None:
    agg = JobAggregate()
    assert send(agg, batch("p0", "a", 1, 100.0, step=10), at=1).verdict is Verdict.ACCEPTED
    assert send(agg, batch("p0", "b", 1, 30.0, step=12), at=2).verdict is Verdict.ACCEPTED
    assert set(agg.sources) == {("p0", "a"), ("p0", "b")} and not agg.folded
    # a and b are both quiet at 62 s: only the oldest folds
    assert send(agg, batch("p0", "c", 1, 5.0, step=3), at=62).verdict is Verdict.ACCEPTED
    assert set(agg.sources) == {("p0", "b"), ("p0", "c")}
    fold = agg.folded["p0"]
    assert (fold.boots, fold.boot_ids, fold.energy_j, fold.global_step, fold.steps_seen) == (
        1,
        ["a"],
        100.0,
        10,
        10,
    )
    assert agg.energy_j == 135.0 and agg.pod_energy_j("p0") == 135.0 and agg.global_step == 12


def test_a_replay_under_a_folded_boot_id_is_a_duplicate_and_changes_nothing() -> None:
    agg = JobAggregate()
    for at, boot in enumerate("abc"):
        send(agg, batch("p0", boot, 1, 100.0), at=60 * at)
    before = (agg.energy_j, agg.emissions_g)
    for seq, joules in ((1, 100.0), (2, 80.0), (9, 100.0)):  # a replay, lower counters, a later seq
        result = send(agg, batch("p0", "a", seq, joules), at=200)
        assert (
            result.verdict is Verdict.DUPLICATE and "folded into the pod's total at 100 J" in result.message
        )
    assert (agg.energy_j, agg.emissions_g) == before == (300.0, before[1])
    assert agg.refused == {}  # a duplicate is no refusal


def test_a_folded_boot_whose_counter_passes_what_was_counted_for_it_adds_the_difference_once() -> None:
    """Boot a folded at 100 J; its counter at 150 J adds 50 J (with the batch's uncertainty and shared
    energy in proportion: a third of each), at 150 J again nothing, and growth past the pod's ceiling
    is refused like any other; the energy counted for it survives a restart from status."""
    agg = JobAggregate()
    for at, boot in enumerate("abc"):
        send(agg, batch("p0", boot, 1, 100.0), at=60 * at)
    mig = GpuCounter(index=0, energy_joules=150.0, uncertainty_joules=3.0, sharing="mig")
    grown = batch("p0", "a", 2, 150.0).model_copy(update={"gpus": [mig]})
    result = send(agg, grown, at=200)
    assert (result.verdict, result.energy_j) == (Verdict.ACCEPTED, 50.0)
    assert result.emissions_g == emissions_g(50.0, 1.2, 381.0)
    fold = agg.folded["p0"]
    counted = (fold.marks["a"], fold.energy_j, fold.uncertainty_j, fold.shared_energy_j)
    assert counted == (150.0, 150.0, 1.0, 50.0)
    assert send(agg, batch("p0", "a", 3, 150.0), at=201).verdict is Verdict.DUPLICATE
    restored = roundtrip(agg)
    assert restored.folded["p0"].marks == {"a": 150.0} and restored.energy_j == agg.energy_j == 350.0
    assert send(restored, batch("p0", "a", 4, 5000.0 * 210), at=201, started=0).verdict is Verdict.IMPLAUSIBLE
    assert send(restored, batch("p0", "a", 4, 175.0), at=202).energy_j == 25.0


def test_the_pod_ceiling_counts_folded_energy_so_a_new_boot_id_cannot_inject() -> None:
    """1 GPU for 200 s (+5 s slack) allows 1025 kJ; 475 kJ are in (250 kJ folded): a fresh boot gets 550 kJ.
    (Each boot folds once it has been quiet for the live window, 60 s, and a new boot needs its place.)"""
    agg = JobAggregate()
    for at, boot, joules in ((45, "a", 250_000.0), (110, "b", 125_000.0), (130, "c", 100_000.0)):
        assert send(agg, batch("p0", boot, 1, joules), at=at, started=0).verdict is Verdict.ACCEPTED
    assert agg.folded["p0"].energy_j == 250_000.0
    assert send(agg, batch("p0", "fresh", 1, 550_001.0), at=200, started=0).verdict is Verdict.IMPLAUSIBLE
    assert send(agg, batch("p0", "fresh", 1, 550_000.0), at=200, started=0).verdict is Verdict.ACCEPTED
    assert agg.energy_j == 1_025_000.0


def test_folded_ids_are_bounded_and_an_aged_out_id_is_held_to_the_pod_ceiling() -> None:
    agg = JobAggregate(limits=Limits(folded_ids_per_pod=3))
    for i in range(10):
        send(agg, batch("p0", f"b{i}", 1, 1.0), at=60 * i, started=0)
    fold = agg.folded["p0"]
    assert (fold.boots, fold.boot_ids, fold.energy_j) == (8, ["b5", "b6", "b7"], 8.0)
    assert len(agg.sources) == 2 and agg.energy_j == 10.0
    assert send(agg, batch("p0", "b6", 1, 1.0), at=600, started=0).verdict is Verdict.DUPLICATE
    # b0 fell off the list: it is a new boot id again, under the same ceiling as any new boot id
    ceiling = 5000.0 * (600 + 5) - 10.0
    assert send(agg, batch("p0", "b0", 1, ceiling + 1), at=600, started=0).verdict is Verdict.IMPLAUSIBLE


def test_six_thousand_boot_ids_from_one_pod_keep_status_small() -> None:
    """6000 boot ids from one pod's token, each after the one before went quiet, leave two sources and one
    fold: unbounded, status grows until etcd refuses it. (All at once, all but two are refused:
    tests/unit/test_live_boots.py.)"""
    agg = JobAggregate()
    for i in range(6000):
        assert send(agg, batch("p0", f"{i:032x}", 1, 0.5), at=60 * i).verdict is Verdict.ACCEPTED
    assert len(agg.sources) == 2 and agg.folded["p0"].boots == 5998
    assert agg.energy_j == 3000.0 and agg.status_bytes() < 3500
    assert len(json.dumps(telemetry_update(agg, lookup("DE"), 6000.0))) < 5000


def test_a_pod_beyond_the_per_job_cap_is_refused_and_counted() -> None:
    agg = JobAggregate(limits=Limits(pods_per_job=2))
    send(agg, batch("p0", "a", 1, 1.0), at=1)
    send(agg, batch("p1", "a", 1, 2.0), at=1)
    result = send(agg, batch("p2", "a", 1, 4.0), at=2)
    assert result.verdict is Verdict.TOO_MANY_PODS and "2 pods" in result.message
    assert send(agg, batch("p1", "b", 1, 8.0), at=3).verdict is Verdict.ACCEPTED  # a known pod's new boot
    assert agg.energy_j == 11.0 and agg.refused == {"too_many_pods": 1}
    assert agg.capacity_refusals() == {Verdict.TOO_MANY_PODS: 1}


def test_a_new_source_past_the_size_budget_is_refused_and_a_folding_boot_still_fits() -> None:
    one = source_bytes("p0", "a", "simulated", "", [""])
    fold = FOLD_FIXED_BYTES + text_bytes("p0") + folded_id_bytes("a")
    agg = JobAggregate(limits=Limits(status_budget_bytes=2 * one + fold, live_boots_per_pod=1))
    send(agg, batch("p0", "a", 1, 1.0), at=1)
    send(agg, batch("p1", "a", 1, 1.0), at=1)
    result = send(agg, batch("p2", "a", 1, 1.0), at=2)  # a third source would not fit
    assert result.verdict is Verdict.STATUS_FULL and "p2/a" in result.message
    assert agg.refused == {"status_full": 1} and agg.energy_j == 2.0
    assert send(agg, batch("p0", "b", 1, 3.0), at=61).verdict is Verdict.ACCEPTED  # folds quiet p0/a: fits
    assert agg.energy_j == 5.0 and agg.folded["p0"].boot_ids == ["a"]
    assert agg.status_bytes() <= 2 * one + fold
    assert agg.capacity_refusals() == {Verdict.STATUS_FULL: 1}


def test_status_bytes_estimate_is_an_upper_bound_of_the_serialization() -> None:
    big, tiny = 1.2345678901234567e300, -1.2345678901234567e-300
    src = Source(
        pod="p" * 253, boot_id="\u00e9" * 64, seq=2**62, energy_j=big, steps_seen=2**62, global_step=2**62,
        last_record_step=-(2**62), sent_at=-big, method="power-integration", markers_dropped=2**62,
        records_dropped=2**62, uncertainty_j=big, shared_energy_j=big, method_reason="\u2603" * 400,
        received_at=tiny, first_received_at=-big,
    )  # fmt: skip
    src.gpus = [SourceGpu(i, "GPU-" + "f" * 92, "exclusive") for i in range(64)]
    src.gpu_energy_j = {i: 1.2345678901234567e300 for i in range(64)}
    src.records.append((2**62, 1.2345678901234567e300, 1.2345678901234567e300))
    model = source_status(src)
    size = len(model.model_dump_json(by_alias=True))
    size_ascii = len(json.dumps(model.model_dump(by_alias=True, mode="json")))
    estimate = source_bytes(
        src.pod, src.boot_id, src.method, src.method_reason[:300], [g.uuid for g in src.gpus]
    )
    assert max(size, size_ascii) <= estimate
    SourceStatus.model_validate(model.model_dump())


@pytest.mark.parametrize("through", [roundtrip, compact_roundtrip], ids=["one-object-per-source", "compact"])
def test_totals_survive_a_restart_from_status_exactly(
    through: Callable[[JobAggregate], JobAggregate],
) -> None:
    agg = JobAggregate()
    rng = random.Random(3)
    for i in range(40):
        pod = f"p{i % 4}"
        send(
            agg,
            batch(
                pod, f"b{i}", 1, rng.uniform(0, 1000), step=i, method=rng.choice(["simulated", "unavailable"])
            ),
            at=20 * i,  # a pod's boots 80 s apart: each one before the last is quiet
        )
    again = through(agg)
    assert again.folded == agg.folded and set(again.sources) == set(agg.sources)
    assert (again.energy_j, again.energy_upper_bound_j, again.shared_energy_j, again.global_step) == (
        agg.energy_j, agg.energy_upper_bound_j, agg.shared_energy_j, agg.global_step,
    )  # fmt: skip
    assert again.emissions_g == agg.emissions_g and again.energy_measured is agg.energy_measured is False
    # and it goes on the same way: a replay of a folded boot is still a duplicate after the restart
    assert send(again, batch("p0", "b0", 1, 1.0), at=1000).verdict is Verdict.DUPLICATE


Boot = list[float]  # cumulative increments of one boot's batches
RESTART_S = 100.0
"""A pod's sidecar restarts this often in the honest model below: boot b starts at b x RESTART_S."""
RETRY_S = 30.0
"""When a sidecar sends a batch answered 429 again (its longest backoff)."""


def honest_deliveries(pods: list[list[Boot]], rng: random.Random) -> list[tuple[float, TelemetryBatch]]:
    """(arrival, batch) of honest sidecars, replays included, in arrival order.

    Boot b of a pod starts at b x RESTART_S. Its batches arrive in any order within 1.4 x RESTART_S of
    that (the last in-flight ones, retried, after the next boot started), the first of them before boot
    b + 1 starts (a sidecar sends at once when it starts); so it is quiet (60 s) when boot b + 2 starts.
    Replays of any batch arrive at any later time."""
    timed: list[tuple[float, TelemetryBatch]] = []
    for p, boots in enumerate(pods):
        for b, increments in enumerate(boots):
            total, times = 0.0, [b + rng.uniform(0, 1.4) for _ in increments]
            times[rng.randrange(len(times))] = b + rng.uniform(0, 0.9)
            for seq, (inc, t) in enumerate(zip(increments, times, strict=True), start=1):
                total += inc
                timed.append((RESTART_S * t, batch(f"p{p}", f"boot{b}", seq, total, step=10 * b + seq)))
    end = max(t for t, _ in timed)
    for t, b in list(timed)[: len(timed) // 2 + 1]:
        timed.append((rng.uniform(t, end + RESTART_S), b))
    return sorted(timed, key=lambda tb: tb[0])


@pytest.mark.parametrize("restarted", [roundtrip, compact_roundtrip], ids=["one-object", "compact"])
@settings(max_examples=150, deadline=None)
@given(
    pods=st.lists(
        st.lists(st.lists(st.floats(0, 1000), min_size=1, max_size=5), min_size=1, max_size=6),
        min_size=1,
        max_size=3,
    ),
    seed=st.integers(0, 2**32 - 1),
    restart_at=st.integers(0, 200),
)
def test_any_honest_interleaving_gives_the_totals_without_folding(
    restarted: Callable[[JobAggregate], JobAggregate], pods: list[list[Boot]], seed: int, restart_at: int
) -> None:
    """Batches within a boot in any order, a boot's batches overlapping the next boot's (late in-flight
    batches), replays and duplicates of anything already sent at any later time, and an operator restart
    from status anywhere: the folded job totals what it would without folding. A restart gives every
    boot a new live window, so a boot may be answered 429 for a while after it; the sidecar sends that
    batch again later, and nothing is lost."""
    stream = honest_deliveries(pods, random.Random(seed))
    plain = JobAggregate(limits=NO_FOLDING)
    for at, b in stream:
        send(plain, b, at=at)
    folded, queue, n = JobAggregate(), [(at, i, b) for i, (at, b) in enumerate(stream)], len(stream)
    heapq.heapify(queue)
    while queue:
        at, i, b = heapq.heappop(queue)
        if i == restart_at:
            folded = restarted(folded)
        got = send(folded, b, at=at)
        assert got.verdict in (Verdict.ACCEPTED, Verdict.DUPLICATE, Verdict.LIVE_BOOTS), got
        if got.verdict is Verdict.LIVE_BOOTS:
            assert i >= restart_at  # only a restart's fresh window holds an honest boot back
            heapq.heappush(queue, (at + RETRY_S, n, b))
            n += 1
    assert folded.energy_j == pytest.approx(plain.energy_j, abs=1e-6)
    assert folded.emissions_g == pytest.approx(plain.emissions_g, rel=1e-12, abs=1e-9)
    assert folded.global_step == plain.global_step
    for p in range(len(pods)):
        assert folded.pod_energy_j(f"p{p}") == pytest.approx(plain.pod_energy_j(f"p{p}"), abs=1e-6)
        assert sum(1 for s in folded.sources.values() if s.pod == f"p{p}") <= 2
    assert roundtrip(folded).energy_j == compact_roundtrip(folded).energy_j == folded.energy_j


def test_every_refusal_is_answered_with_a_4xx() -> None:
    """A verdict without an HTTP status would raise in the handler: a 500 for a hostile batch."""
    from carbontrack.telemetry.server import _VERDICT_STATUS

    assert {v: 400 <= _VERDICT_STATUS[v] < 500 for v in Verdict if v is not Verdict.ACCEPTED} == {
        v: True for v in Verdict if v is not Verdict.ACCEPTED
    }


def test_a_job_filled_to_the_budget_writes_a_patch_well_under_etcds_limit() -> None:
    """Pods of 8 GPUs with 61-character names until status-full (the pod cap raised out of the way): one
    object per source while they fit, then the compact form, which holds more than the 2000 pods a job
    keeps; the whole telemetry patch stays under the budget plus the bounded rest (64 GPUs listed, 64
    metrics), far from etcd's 1.5 MiB."""
    agg = JobAggregate(limits=Limits(pods_per_job=10_000))
    pods = 0
    while True:
        gpus = [GpuCounter(index=i, energy_joules=1.0, uuid=f"GPU-{pods:08d}-{i:027d}") for i in range(8)]
        b = batch(f"llama-lora-{pods:04d}-" + "x" * 45, "f" * 32, 1, 0.0).model_copy(update={"gpus": gpus})
        if send(agg, b, at=pods).verdict is Verdict.STATUS_FULL:
            break
        pods += 1
    size = len(json.dumps(telemetry_update(agg, lookup("DE"), 1.0)))
    assert 2000 < pods < 2100 and agg.status_bytes() <= agg.limits.status_budget_bytes
    assert size < agg.limits.status_budget_bytes + 64 * 1024 < 1024 * 1024
    print(pods, size)
