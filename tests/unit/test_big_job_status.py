"""A job of 2,000 eight-GPU pods (16,000 GPUs) fits the status budget and keeps exact totals across a
restart: its sources are written in the compact form (state.telemetry_status)."""

from __future__ import annotations

import json
import math
import random
import uuid

import pytest

from carbontrack.api.crd import CarbonTrackedJobStatus
from carbontrack.api.wire import GpuCounter, ObjectRef, PodRef, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt, Verdict
from carbontrack.core.accounting.folding import STATUS_BUDGET_BYTES
from carbontrack.intensity.static import lookup
from carbontrack.state.status import restore, telemetry_update

pytestmark = pytest.mark.unit

PODS, GPUS = 2000, 8
KW = {"pue": 1.2, "intensity_g_per_kwh": 300.0}
ETCD_LIMIT_BYTES = 1536 * 1024
H100 = "NVIDIA H100 80GB HBM3"


def _pod(i: int, rng: random.Random) -> str:
    """A pod name as a Job makes one: the job's name, the completion index and five random characters."""
    return f"llm-pretrain-70b-{i}-{''.join(rng.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}"


def _batch(pod: str, boot: str, seq: int, joules: list[float], uuids: list[str]) -> TelemetryBatch:
    gpus = [
        GpuCounter(index=i, uuid=u, name=H100, energy_joules=j, uncertainty_joules=j * 0.01)
        for i, (u, j) in enumerate(zip(uuids, joules, strict=True))
    ]
    return TelemetryBatch(
        job=ObjectRef(namespace="ml", name="llm"), pod=PodRef(namespace="ml", name=pod), boot_id=boot,
        seq=seq, sent_at=1.7e9, method="energy-counter", gpus=gpus, steps_seen=seq * 10, global_step=seq * 10,
    )  # fmt: skip


def _send(agg: JobAggregate, b: TelemetryBatch, at: float) -> Verdict:
    receipt = Receipt(received_at=at, pod_started_at=at - 3600.0, gpus=GPUS)
    return agg.apply(b, receipt, **KW).verdict


def _status(agg: JobAggregate, now: float) -> tuple[CarbonTrackedJobStatus, str]:
    """The status a write leaves, and its JSON as the apiserver stores it."""
    body = json.dumps(telemetry_update(agg, lookup("DE"), now)["status"], separators=(",", ":"))
    return CarbonTrackedJobStatus.model_validate(json.loads(body)), body


class _Fleet:
    """2,000 pods of 8 GPUs, each with a sidecar boot, sending cumulative counters."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pods = [_pod(i, rng) for i in range(PODS)]
        self.boots = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in self.pods]
        self.uuids = [[f"GPU-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(GPUS)] for _ in self.pods]
        self.joules = [[0.0] * GPUS for _ in self.pods]
        self.seq = [0] * PODS

    def next_batch(self, i: int) -> TelemetryBatch:
        self.seq[i] += 1
        self.joules[i] = [j + self.rng.uniform(3000.0, 7000.0) for j in self.joules[i]]
        return _batch(self.pods[i], self.boots[i], self.seq[i], list(self.joules[i]), self.uuids[i])


def test_a_job_of_2000_eight_gpu_pods_fits_the_status_budget_and_restarts_with_exact_totals() -> None:
    rng, agg = random.Random(16_000), JobAggregate()
    fleet, sent = _Fleet(rng), list[TelemetryBatch]()
    for at, i in enumerate(list(range(PODS)) * 2):
        sent.append(fleet.next_batch(i))
        assert _send(agg, sent[-1], 1.7e9 + at * 0.01) is Verdict.ACCEPTED
    status, body = _status(agg, 1.7e9 + 60)
    telemetry = status.telemetry
    assert telemetry is not None and telemetry.compact is not None and telemetry.sources == []
    assert len(telemetry.compact.pods) == PODS and telemetry.refused.status_full == 0
    sources_json = json.dumps(telemetry.model_dump(by_alias=True, mode="json", include={"compact", "folded"}))
    assert len(sources_json) <= agg.status_bytes() <= STATUS_BUDGET_BYTES
    assert len(body) < ETCD_LIMIT_BYTES // 2  # the rest of the object (spec, metadata) keeps the other half
    assert [(p.method, p.sources) for p in telemetry.compact.profiles] == [("energy-counter", PODS)]
    assert len(status.gpus) == 64 and status.gpus[0].name == H100

    again = restore(status)
    assert (again.energy_j, again.energy_upper_bound_j, again.global_step, again.emissions_g) == (
        agg.energy_j, agg.energy_upper_bound_j, agg.global_step, agg.emissions_g,
    )  # fmt: skip
    # the job total is the sum of the final cumulative counters
    assert again.energy_j == math.fsum(sum(j) for j in fleet.joules)
    # after the restart: every batch already sent is a duplicate, and new ones count once on both sides
    replays = rng.sample(sent, 500)
    fresh = [fleet.next_batch(i) for i in rng.sample(range(PODS), 500)]
    for at, b in enumerate(replays + fresh + replays):
        for side in (agg, again):
            assert _send(side, b, 1.7e9 + 120 + at * 0.01) in (Verdict.ACCEPTED, Verdict.DUPLICATE)
    assert again.energy_j == agg.energy_j == math.fsum(sum(j) for j in fleet.joules)
    assert again.emissions_g == pytest.approx(agg.emissions_g, rel=1e-12)
    assert restore(_status(again, 1.7e9 + 200)[0]).energy_j == again.energy_j


def test_a_small_job_keeps_one_object_per_source() -> None:
    rng, agg = random.Random(8), JobAggregate()
    fleet = _Fleet(rng)
    for i in range(100):
        assert _send(agg, fleet.next_batch(i), 1.7e9 + i) is Verdict.ACCEPTED
    status, _ = _status(agg, 1.7e9 + 200)
    assert status.telemetry is not None and status.telemetry.compact is None
    assert len(status.telemetry.sources) == 100 and status.telemetry.sources[0].gpu_uuids


def test_a_status_in_the_one_object_form_restores_to_the_same_totals_after_an_upgrade() -> None:
    """A status written by an operator that knew only one object per source restores whole."""
    old = {
        "energyJoules": 300.0, "emissionsGrams": 30.0, "steps": 20,
        "telemetry": {
            "sources": [
                {"pod": "p0", "bootId": "a", "seq": 3, "energyJoules": 100.0, "gpuEnergyJoules": [60.0, 40.0],
                 "stepsSeen": 20, "globalStep": 20, "lastRecordStep": 19, "method": "energy-counter",
                 "receivedAt": 1000.5, "firstReceivedAt": 900.0, "window": [10, 50.0, 5.0],
                 "uncertaintyJoules": 1.0, "gpuUuids": ["GPU-0", "GPU-1"], "gpuSharing": ["exclusive", "mig"],
                 "sharedEnergyJoules": 40.0},
            ],
            "folded": [{"pod": "p0", "boots": 1, "bootIds": ["z"], "energyJoules": 200.0, "globalStep": 9}],
        },
    }  # fmt: skip
    agg = restore(CarbonTrackedJobStatus.model_validate(old))
    assert (agg.energy_j, agg.emissions_g, agg.global_step, agg.shared_energy_j) == (300.0, 30.0, 20, 40.0)
    assert agg.sources[("p0", "a")].gpu_energy_j == {0: 60.0, 1: 40.0}
    assert agg.joules_per_step() == 5.0
    # and a replay of the old boot's last batch is still a duplicate, a newer batch whose counters fell
    # still refused (a source counts its largest cumulative energy: core.accounting.aggregation)
    b = _batch("p0", "a", 3, [60.0, 40.0], ["GPU-0", "GPU-1"])
    assert _send(agg, b, 1100.0) is Verdict.DUPLICATE
    b = _batch("p0", "a", 4, [59.0, 40.0], ["GPU-0", "GPU-1"])
    assert _send(agg, b, 1100.0) is Verdict.BACKWARDS
    # its folded boot, written without the energy counted for it, is taken at the pod's whole folded
    # energy (at least its own), so its counter counts only past that: never twice
    assert agg.folded["p0"].marks == {"z": 200.0}
    assert _send(agg, _batch("p0", "z", 7, [150.0, 50.0], ["GPU-0", "GPU-1"]), 1100.0) is Verdict.DUPLICATE
    assert _send(agg, _batch("p0", "z", 8, [150.0, 60.0], ["GPU-0", "GPU-1"]), 1100.0) is Verdict.ACCEPTED
    assert agg.energy_j == 310.0


def test_the_writer_goes_back_to_one_object_per_source_when_they_fit_again() -> None:
    """A compact status restores, and the next write picks the form by the budget again."""
    rng, agg = random.Random(5), JobAggregate()
    fleet = _Fleet(rng)
    for i in range(PODS):
        assert _send(agg, fleet.next_batch(i), 1.7e9 + i * 0.01) is Verdict.ACCEPTED
    status, _ = _status(agg, 1.7e9 + 60)
    assert status.telemetry is not None and status.telemetry.compact is not None
    small = restore(status)
    for key in list(small.sources)[10:]:
        del small.sources[key]
    again, _ = _status(small, 1.7e9 + 60)
    assert again.telemetry is not None and again.telemetry.compact is None
    assert len(again.telemetry.sources) == 10
