"""Energy from the trainer's own NVML samples (sidecar `trainer` mode), driven by a fake clock.

The trainer's sampler sends raw counter readings keyed by NVML UUID; the sidecar places each step
boundary at the marker's timestamp, interpolating between the readings around it. These tests feed
readings taken from simulated GPUs (exact ground truth) and check the records to the millijoule.
"""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.energy.base import EnergyBackend
from carbontrack.energy.meter import COUNTER_UPDATE_S
from carbontrack.energy.simulated import Constant, SimulatedBackend, Square, Trace
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.markers import BadMarker, parse
from carbontrack.sidecar.state import SidecarState

UUIDS = ["GPU-11111111-aaaa", "GPU-22222222-bbbb"]


def config(**kw: Any) -> SidecarConfig:
    base: dict[str, Any] = dict(
        operator_url="", job_namespace="ml", job_name="llama", pod_namespace="ml", pod_name="p0"
    )
    return SidecarConfig(**{**base, **kw})


def dgram(kind: str, seq: int, t: float, step: int = 0, client: str = "c1", **extra: Any) -> bytes:
    body = {"v": 1, "c": client, "q": seq, "t": round(t * 1e9), "k": kind, "s": step, **extra}
    return json.dumps(body).encode()


class Trainer:
    """What the client's sampler would send, reading simulated GPUs at exact instants."""

    def __init__(self, state: SidecarState, traces: list[Trace], start: float = 100.0, **gpu_kw: Any) -> None:
        self.t = start
        self.gpu = SimulatedBackend(traces, clock=lambda: self.t, start_t=start, **gpu_kw)
        self.state = state
        self.seq = 0
        self.sampler_seq = 0
        self.uuids = UUIDS[: len(traces)]
        self.lost: set[int] = set()

    def send(self, data: bytes) -> None:
        self.state.on_datagram(data, self.t)

    def inventory(self, **per_gpu: Any) -> None:
        self.sampler_seq += 1
        g = [{"u": u, "i": i, "c": self.gpu.has_counter, **per_gpu} for i, u in enumerate(self.uuids)]
        self.send(dgram("gpus", self.sampler_seq, self.t, g=g))

    def sample(self, client: str = "c1") -> None:
        self.sampler_seq += 1
        g: list[list[Any]] = []
        for i, u in enumerate(self.uuids):
            if i in self.lost:
                g.append([u, None, None, 1])
            elif self.gpu.has_counter:
                g.append([u, self.gpu.energy_mj(i), None, 0])
            else:
                g.append([u, None, self.gpu.power_mw(i), 0])
        self.send(dgram("sample", self.sampler_seq, self.t, g=g, client=client))

    def step(self, step: int, kind: str = "step") -> None:
        self.seq += 1
        self.send(dgram(kind, self.seq, self.t, step))

    def truth(self, t0: float, t1: float) -> float:
        return sum(
            self.gpu.true_energy_j(i, t1) - self.gpu.true_energy_j(i, t0) for i in range(len(self.uuids))
        )


def trainer_state(**kw: Any) -> SidecarState:
    def no_backend(_uuids: list[str] | None) -> EnergyBackend:
        raise AssertionError("trainer mode opens no backend")

    return SidecarState(config(**kw), no_backend, now=0.0, wall=lambda: 1.7e9, clock=lambda: 0.0)


def run_steps(tr: Trainer, rng: random.Random, steps: int, gap_s: float = 0.005) -> list[float]:
    """Markers at random times, a reading `gap_s` after each (the sampler's poll) and at 10 Hz between."""
    times = []
    for step in range(1, steps + 1):
        end = tr.t + rng.uniform(0.05, 0.9)
        while tr.t + 0.1 < end:
            tr.t += 0.1
            tr.sample()
        tr.t = end
        times.append(end)
        tr.step(step)
        tr.t += gap_s
        tr.sample()
    return times


def test_trainer_samples_give_each_step_its_energy_to_the_millijoule() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(300.0), Constant(412.5)], counter_offset_mj=987_654_321)
    tr.inventory()
    tr.sample()
    start = tr.t
    times = run_steps(tr, random.Random(3), 100)
    records = list(state.outbox.records)
    assert [r.step for r in records] == list(range(1, 101))
    for r, t0, t1 in zip(records, [start, *times[:-1]], times, strict=True):
        assert abs(r.energy_joules - tr.truth(t0, t1)) <= 0.002 * 2  # integer-mJ readings at both ends
        assert r.duration_s == pytest.approx(t1 - t0, abs=1e-9)  # the marker's own timestamps
    batch = state.batch(tr.t)
    assert batch.method == "energy-counter" and batch.method_reason == "the trainer's NVML samples"
    assert [g.uuid for g in batch.gpus] == UUIDS and all(g.sharing == "exclusive" for g in batch.gpus)
    assert abs(batch.energy_joules - tr.truth(start, tr.t)) <= 0.002
    # stated bound: two counter update periods at the highest power seen, per GPU
    assert batch.gpus[1].uncertainty_joules == pytest.approx(2 * COUNTER_UPDATE_S * 412.5, rel=1e-3)


def test_bursty_power_between_readings_stays_within_the_stated_per_boundary_bound() -> None:
    """Square 400/90 W: a boundary interpolated across a 5 ms gap can be off by at most dP x gap."""
    state = trainer_state()
    tr = Trainer(state, [Square(400, 90, 0.7, 0.4)])
    tr.inventory()
    tr.sample()
    start = tr.t
    times = run_steps(tr, random.Random(5), 80)
    for r, t0, t1 in zip(state.outbox.records, [start, *times[:-1]], times, strict=True):
        assert abs(r.energy_joules - tr.truth(t0, t1)) <= 2 * 310 * 0.005 + 0.002
    assert abs(sum(r.energy_joules for r in state.outbox.records) - tr.truth(start, times[-1])) <= 1.6


def test_a_marker_waits_for_a_reading_after_it_then_closes_exactly() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(200.0)])
    tr.inventory()
    tr.sample()
    t0 = tr.t
    tr.t += 1.0
    tr.step(1)
    assert not state.outbox.records and len(state.pending) == 1  # no reading after the marker yet
    tr.t += 0.01
    tr.sample()
    (record,) = state.outbox.records
    assert abs(record.energy_joules - 200.0) <= 0.002 and record.duration_s == pytest.approx(1.0)
    assert t0 < tr.t


def test_a_marker_without_a_later_reading_is_closed_after_the_wait_with_the_newest() -> None:
    state = trainer_state(marker_wait_s=2.0)
    tr = Trainer(state, [Constant(200.0)])
    tr.inventory()
    tr.sample()
    tr.t += 1.0
    tr.sample()
    tr.t += 0.5
    tr.step(1)  # the trainer hangs: no reading comes after this marker
    state.batch(tr.t + 1.0)
    assert not state.outbox.records
    state.batch(tr.t + 2.5)
    (record,) = state.outbox.records
    assert abs(record.energy_joules - 200.0) <= 0.002  # up to the newest reading, nothing invented


def test_local_ranks_reporting_the_same_gpus_are_counted_once() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(300.0), Constant(300.0)])
    tr.inventory()
    tr.sample(client="rank0")
    start = tr.t  # energy counts from the first reading
    for k in range(200):
        tr.t += 0.05
        tr.sample(client="rank0" if k % 2 else "rank1")
        if k % 7 == 0:  # a late, older reading from the other rank arrives out of order
            tr.t -= 0.02
            tr.sample(client="rank1")
            tr.t += 0.02
    assert abs(state.batch(tr.t).energy_joules - tr.truth(start, tr.t)) <= 0.002 * 2


def test_counter_reset_by_driver_reload_keeps_the_energy_and_widens_the_bound() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(250.0)], counter_offset_mj=5_000_000)
    tr.inventory()
    tr.sample()
    start = tr.t
    for _ in range(10):
        tr.t += 0.1
        tr.sample()
    before = state.batch(tr.t).energy_joules
    tr.t += 0.5  # the driver reloads 0.4 s in: the counter restarts from zero, 0.1 s before this reading
    tr.gpu.offset_mj = 25_000 - (tr.gpu.energy_mj(0) - tr.gpu.offset_mj)  # reads 25 J since the reload
    tr.sample()
    batch = state.batch(tr.t)
    assert batch.energy_joules == pytest.approx(before + 25.0, abs=0.002)  # 100 J hidden by the reload
    assert batch.energy_joules <= tr.truth(start, tr.t) <= batch.energy_joules + batch.uncertainty_joules
    assert batch.gpus[0].uncertainty_joules >= 250.0 * 0.5


def test_a_lost_gpu_is_frozen_and_the_others_go_on() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(300.0), Constant(100.0)])
    tr.inventory()
    tr.sample()
    start = tr.t
    tr.t += 1.0
    tr.sample()
    tr.lost.add(0)
    tr.t += 1.0
    tr.step(1)
    tr.t += 0.01
    tr.sample()
    (record,) = state.outbox.records  # the lost GPU does not hold the marker back
    batch = state.batch(tr.t)
    assert batch.gpus[0].lost and not batch.gpus[1].lost
    assert batch.gpus[0].energy_joules == pytest.approx(300.0, abs=0.002)
    assert batch.gpus[1].energy_joules == pytest.approx(100.0 * (tr.t - start), abs=0.002)
    assert record.energy_joules == pytest.approx(300.0 + 100.0 * 2.0, abs=0.004)


@pytest.mark.parametrize(
    ("per_gpu", "sharing", "foreign"),
    [
        ({}, "exclusive", 0),
        ({"f": 2}, "shared", 2),
        ({"mig": ["MIG-aaaa", "MIG-bbbb"]}, "mig", 0),
    ],
)
def test_sharing_as_the_trainer_sees_it_reaches_the_batch(
    per_gpu: dict[str, Any], sharing: str, foreign: int
) -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(300.0)])
    tr.inventory(**per_gpu)
    tr.sample()
    tr.t += 1.0
    tr.sample()
    (gpu,) = state.batch(tr.t).gpus
    assert (gpu.sharing, gpu.foreign_processes) == (sharing, foreign)


def test_trainer_without_nvml_reports_unavailable_with_its_reason_and_never_blocks_steps() -> None:
    state = trainer_state()
    tr = Trainer(state, [Constant(300.0)])
    err = "libnvidia-ml.so.1: cannot open shared object file: No such file or directory"
    tr.send(dgram("hello", 1, tr.t, err=err))
    tr.seq = 1
    tr.t += 0.5
    tr.step(1)
    (record,) = state.outbox.records  # closed at once: nothing to wait for
    batch = state.batch(tr.t)
    assert record.energy_joules == 0.0 and batch.gpus == []
    assert batch.method == "unavailable" and err in batch.method_reason


def test_power_only_gpus_are_integrated_with_the_trapezoid_bound() -> None:
    state = trainer_state()
    tr = Trainer(state, [Square(400, 100, 1.0, 0.5)], has_energy_counter=False)
    tr.inventory()
    tr.sample()
    start = tr.t
    for _ in range(100):
        tr.t += 0.1
        tr.sample()
    batch = state.batch(tr.t)
    assert batch.method == "power-integration"
    error = abs(batch.energy_joules - tr.truth(start, tr.t))
    assert error <= batch.uncertainty_joules
    assert batch.uncertainty_joules == pytest.approx(20 * 300 * 0.1 / 2, rel=0.1)  # 20 edges of 300 W


@pytest.mark.parametrize(
    "g",
    [
        [["GPU-a", -1, None, 0]],
        [["", 1, None, 0]],
        [["GPU-a", 1, None]],
        [["x" * 97, 1, None, 0]],
        [["GPU-a", 1.5, None, 0]],
        "not a list",
        [[f"GPU-{i}", 1, None, 0] for i in range(65)],
    ],
)
def test_malformed_samples_are_refused(g: Any) -> None:
    with pytest.raises(BadMarker):
        parse(dgram("sample", 1, 1.0, g=g))


def test_nvml_mode_refuses_gpus_that_are_not_exactly_the_trainers() -> None:
    """Opt-in sidecar NVML: the sidecar's GPUs must be the trainer's NVML UUIDs, or nothing is billed."""
    backend = SimulatedBackend([Constant(300.0)])  # its UUID is GPU-sim-0000, the trainer's is not

    def factory(_uuids: list[str] | None) -> EnergyBackend:
        return backend

    state = SidecarState(
        config(backend="nvml", visible_devices="0"), factory, now=0.0, wall=lambda: 1.7e9, clock=lambda: 0.0
    )
    assert state.method == "simulated"
    state.on_datagram(dgram("gpus", 1, 0.0, g=[{"u": UUIDS[0], "i": 0}]), 0.0)
    batch = state.batch(1.0)
    assert batch.method == "unavailable"
    assert "mismatched GPU UUIDs" in batch.method_reason and UUIDS[0] in batch.method_reason


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["gpus", "sample", "hello"]), g=_json, err=_json, t=_json)
def test_any_sampler_datagram_is_parsed_or_refused_never_crashes_the_sidecar(
    kind: str, g: Any, err: Any, t: Any
) -> None:
    state = trainer_state()
    body = {"v": 1, "c": "x", "q": 1, "t": t, "k": kind, "s": 0, "g": g, "err": err}
    try:
        data = json.dumps(body).encode()
    except ValueError:
        return
    with contextlib.suppress(BadMarker):
        parse(data)
    state.on_datagram(data, 1.0)  # counts a bad one, never raises
    state.on_datagram(dgram("step", 1, 1.0, 1), 1.0)
    state.on_datagram(data.replace(b'"q": 1', b'"q": 2'), 1.5)  # a second reading: growth, if any
    state.batch(2.0, final=True)  # a valid batch, whatever came in


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(
        st.tuples(st.floats(-100, 100), st.integers(0, 2**66), st.integers(0, 2**33)), min_size=1, max_size=8
    ),
    markers=st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**64)), max_size=5),
)
def test_hostile_readings_and_marker_times_always_give_a_valid_batch(
    readings: list[tuple[float, int, int]], markers: list[tuple[int, int]]
) -> None:
    """Absurd counters, power, times and steps are refused or timed on arrival, never shipped."""
    state = trainer_state()
    now = 100.0
    for i, (dt, mj, mw) in enumerate(readings):
        g = [["GPU-a", mj, None, 0, 0], ["GPU-b", None, mw, 0, 0]]
        state.on_datagram(dgram("sample", i + 1, now + dt, g=g), now + i * 0.1)
    for j, (step, t_ns) in enumerate(markers):
        body = {"v": 1, "c": "c1", "q": j + 1, "t": t_ns, "k": "step", "s": step}
        state.on_datagram(json.dumps(body).encode(), now + 1.0)
    batch = state.batch(now + 5.0, final=True)
    assert all(g.energy_joules <= 5000.0 * 21 + 1 for g in batch.gpus)  # readings within ~21 s of each other
