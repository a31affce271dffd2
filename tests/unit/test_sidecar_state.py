"""The sidecar's logic driven by a fake clock and simulated GPUs: exact per-step energy, drops, bounds."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable

import pytest

from carbontrack.api.wire import StepRecord
from carbontrack.energy.base import EnergyBackend
from carbontrack.energy.simulated import Constant, Ramp, SimulatedBackend, Square, Trace, bursty
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.outbox import Backoff, Outbox
from carbontrack.sidecar.state import SidecarState


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def config(**kw: object) -> SidecarConfig:
    base = dict(
        operator_url="",
        job_namespace="ml",
        job_name="llama",
        pod_namespace="ml",
        pod_name="llama-0",
        backend="simulated",
    )
    base.update(kw)
    return SidecarConfig(**base)  # type: ignore[arg-type]


def sidecar(traces: list[Trace], clock: Clock, **backend_kw: object) -> tuple[SidecarState, SimulatedBackend]:
    gpu = SimulatedBackend(traces, clock=clock, start_t=clock.t, **backend_kw)  # type: ignore[arg-type]
    factory: Callable[[str | None], EnergyBackend] = lambda _visible: gpu  # noqa: E731
    return SidecarState(config(), factory, now=clock.t, wall=lambda: 1.7e9, clock=clock), gpu


def marker(step: int, seq: int, kind: str = "step", client: str = "c1", **extra: object) -> bytes:
    return json.dumps({"v": 1, "c": client, "q": seq, "t": 0, "k": kind, "s": step, **extra}).encode()


def truth(gpu: SimulatedBackend, t0: float, t1: float) -> float:
    return sum(gpu.true_energy_j(i, t1) - gpu.true_energy_j(i, t0) for i in range(len(gpu.traces)))


def test_counter_path_attributes_each_step_to_the_millijoule() -> None:
    clock = Clock()
    traces: list[Trace] = [Square(410.3, 95.7, 1.3, 0.7), Ramp(80, 390, 7.0), Constant(250.25)]
    state, gpu = sidecar(traces, clock, counter_offset_mj=123_456_789)
    rng = random.Random(7)
    times = [clock.t]
    for step in range(1, 201):
        clock.t += rng.uniform(0.05, 0.9)
        times.append(clock.t)
        state.on_datagram(marker(step, step), clock.t)
    records = list(state.outbox.records)
    assert [r.step for r in records] == list(range(1, 201))
    for r, t0, t1 in zip(records, times[:-1], times[1:], strict=True):
        assert abs(r.energy_joules - truth(gpu, t0, t1)) <= 0.001 * len(traces)  # integer-mJ counters
    batch = state.batch(clock.t)
    assert batch.energy_joules == pytest.approx(sum(r.energy_joules for r in records), abs=1e-9)
    assert abs(batch.energy_joules - truth(gpu, times[0], clock.t)) <= 0.001 * len(traces)


def run_power_integration(trace: Trace, seed: int) -> tuple[list[float], list[float], float, float]:
    """Counterless GPU, 10 Hz sampler, markers every 2-4 s: per-step (measured, true) and totals."""
    clock = Clock()
    state, gpu = sidecar([trace], clock, has_energy_counter=False)
    assert state.meter is not None and state.meter.needs_sampling
    rng = random.Random(seed)
    start = clock.t
    step_times = [start]
    for _ in range(60):
        step_times.append(step_times[-1] + rng.uniform(2.0, 4.0))
    samples = [start + 0.1 * k for k in range(1, int((step_times[-1] - start) * 10) + 1)]
    events = sorted([(t, "sample") for t in samples] + [(t, "marker") for t in step_times[1:]])
    step = 0
    for t, kind in events:
        clock.t = t
        if kind == "marker":
            step += 1
            state.on_datagram(marker(step, step), t)
        else:
            state.meter.read(t)  # the sampler's 10 Hz tick
    measured = [r.energy_joules for r in state.outbox.records]
    true = [truth(gpu, t0, t1) for t0, t1 in itertools.pairwise(step_times)]
    return measured, true, sum(measured), truth(gpu, start, step_times[-1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_power_integration_at_10hz_is_within_half_a_percent_per_step_on_a_bursty_trace(seed: int) -> None:
    """Bursts of 1-2.5 s at 400 W, troughs at 90 W, 300 ms slews between them."""
    measured, true, total, total_true = run_power_integration(bursty(seed), seed)
    assert max(abs(m - t) / t for m, t in zip(measured, true, strict=True)) <= 0.005
    assert abs(total - total_true) / total_true <= 0.005


def test_power_integration_error_on_instant_edges_is_bounded_per_edge() -> None:
    """Instant 310 W edges: each costs at most dP*dt/2 = 15.5 J in its step (aliasing: a limit of
    sampling, which is why the energy counter is preferred); over a run the signed errors cancel."""
    trace = Square(400, 90, 1.37, 0.64)
    measured, true, total, total_true = run_power_integration(trace, 1)
    edges_per_step = 2 * 4.0 / 1.37 + 2
    for m, t in zip(measured, true, strict=True):
        assert abs(m - t) <= edges_per_step * 310 * 0.1 / 2
    assert abs(total - total_true) / total_true <= 0.005


def test_lost_and_reordered_markers_neither_lose_nor_double_count() -> None:
    clock = Clock()
    state, gpu = sidecar([Constant(300)], clock)
    start = clock.t
    for step, seq in [(1, 1), (2, 2), (5, 5), (3, 3), (6, 6)]:  # 4 lost, 3 late
        clock.t += 1.0
        state.on_datagram(marker(step, seq), clock.t)
    records = list(state.outbox.records)
    assert [(r.first_step, r.step) for r in records] == [(0, 1), (1, 2), (2, 5), (5, 6)]
    assert sum(r.energy_joules for r in records) == pytest.approx(truth(gpu, start, start + 5.0), abs=0.002)
    batch = state.batch(clock.t)
    assert batch.markers_dropped == 1  # seq 4 never came; seq 3 came late and is forgiven
    assert batch.global_step == 6 and batch.steps_seen == 5


def test_dead_operator_bounds_records_but_never_counters() -> None:
    clock = Clock()
    gpu = SimulatedBackend([Constant(200)], clock=clock, start_t=clock.t)
    state = SidecarState(
        config(buffer_records=50), lambda _v: gpu, now=clock.t, wall=lambda: 1.7e9, clock=clock
    )
    for step in range(1, 301):
        clock.t += 0.5
        state.on_datagram(marker(step, step), clock.t)
        if step % 10 == 0:
            state.batch(clock.t)  # built and "sent", never acknowledged
    assert len(state.outbox.records) == 50
    batch = state.batch(clock.t)
    assert batch.records_dropped == 250
    assert [r.step for r in batch.steps] == list(range(251, 301))  # the newest survive
    assert batch.energy_joules == pytest.approx(200 * 150.0, abs=0.001)  # counters whole


def test_ack_forgets_exactly_what_was_delivered() -> None:
    box = Outbox(limit=100)
    for s in range(1, 4):
        box.add_record(StepRecord(step=s, first_step=s - 1, energy_joules=1, duration_s=1, ended_at=1))
    from carbontrack.api.wire import ObjectRef, PodRef, TelemetryBatch

    base = TelemetryBatch(
        job=ObjectRef(namespace="a", name="b"),
        pod=PodRef(namespace="a", name="p"),
        boot_id="x",
        seq=0,
        sent_at=0,
        method="simulated",
    )
    sent = box.next_batch(base)
    box.add_record(StepRecord(step=4, first_step=3, energy_joules=1, duration_s=1, ended_at=1))
    box.ack(sent.seq - 1)  # a stale ack changes nothing
    assert box.pending == 4
    box.ack(sent.seq)
    assert [r.step for r in box.records] == [4]


def test_backoff_grows_and_is_jittered() -> None:
    b = Backoff(base_s=0.5, max_s=30, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= 30 for d in delays)
    assert max(delays[5:]) > max(delays[:2])


def test_gpu_lost_freezes_its_counter_and_keeps_the_others() -> None:
    clock = Clock()
    state, gpu = sidecar([Constant(100), Constant(100)], clock)
    clock.t += 1
    state.on_datagram(marker(1, 1), clock.t)
    gpu.lost.add(1)
    clock.t += 1
    state.on_datagram(marker(2, 2), clock.t)
    batch = state.batch(clock.t)
    assert [g.lost for g in batch.gpus] == [False, True]
    assert batch.gpus[0].energy_joules == pytest.approx(200.0)
    assert batch.gpus[1].energy_joules == pytest.approx(100.0)


def test_bad_datagrams_are_counted_and_harmless() -> None:
    clock = Clock()
    state, _ = sidecar([Constant(100)], clock)
    for data in [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"v":2}',
        marker(1, 1, kind="nope"),
        b'{"v":1,"c":"x","q":1,"t":NaN,"k":"step","s":1}',
        marker(-1, 1),
        marker(1, 1, kind="dp", dp={"noise_multiplier": 1.0}),
    ]:
        assert state.on_datagram(data, clock.t) is None
    assert state.bad_markers == 8
    assert not state.outbox.records


def test_eval_and_dp_reports_ride_along() -> None:
    clock = Clock()
    state, _ = sidecar([Constant(100)], clock)
    state.on_datagram(marker(10, 1, kind="eval", m={"eval_accuracy": 0.91}), clock.t)
    state.on_datagram(
        marker(10, 2, kind="dp", dp={"noise_multiplier": 1.1, "sample_rate": 0.01, "delta": 1e-5}), clock.t
    )
    batch = state.batch(clock.t)
    assert batch.evals[0].metrics == {"eval_accuracy": 0.91}
    assert batch.dp is not None and batch.dp.noise_multiplier == 1.1


def test_nvml_mode_waits_for_the_trainers_nvml_uuids_never_its_env() -> None:
    """The device plugin's env names no UUIDs under CDI (`void`) or GKE (`all`): the hello's is ignored,
    the GPUs opened are those the trainer's own NVML names in its inventory."""
    seen: list[list[str] | None] = []

    def factory(uuids: list[str] | None) -> EnergyBackend:
        seen.append(uuids)
        return SimulatedBackend([Constant(1), Constant(1)])

    state = SidecarState(config(backend="nvml"), factory, now=0.0, clock=lambda: 0.0)
    assert state.meter is None and state.method == "unavailable"
    state.on_datagram(marker(0, 1, kind="hello", visible="GPU-aaaa,GPU-bbbb"), 0.0)
    assert seen == [] and state.meter is None
    inventory = [{"u": "GPU-sim-0000", "i": 0}, {"u": "GPU-sim-0001", "i": 1}]
    state.on_datagram(marker(0, 1, kind="gpus", g=inventory), 0.0)
    assert seen == [["GPU-sim-0000", "GPU-sim-0001"]]
    assert state.method == "simulated" and not state.refused


def test_a_reported_checkpoint_rides_on_every_batch_until_a_newer_one_and_a_bad_one_is_counted() -> None:
    clock = Clock()
    state, _ = sidecar([Constant(300.0)], clock)
    state.on_datagram(marker(10, 1, "ckpt", u="/ckpt/step-10"), clock.t)
    first = state.batch(clock.t)
    assert first.checkpoint is not None and (first.checkpoint.step, first.checkpoint.uri) == (
        10,
        "/ckpt/step-10",
    )
    state.outbox.ack(first.seq)
    assert (
        state.batch(clock.t).checkpoint == first.checkpoint
    )  # cumulative, like dp: a lost batch loses nothing
    state.on_datagram(marker(15, 2, "ckpt", u="s3://b/15"), clock.t)
    assert state.batch(clock.t).checkpoint.step == 15  # type: ignore[union-attr]
    assert state.on_datagram(marker(20, 3, "ckpt"), clock.t) is None and state.bad_markers == 1  # no uri
    assert state.on_datagram(marker(20, 4, "ckpt", u="x" * 1025), clock.t) is None and state.bad_markers == 2
