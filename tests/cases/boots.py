"""One pod of two H100s and its sidecar's boots, for the unit tests of live and folded boots
(core.accounting.boots, core.accounting.folding): batches of pod p0, sent and restored."""

from __future__ import annotations

import json

from carbontrack.api.crd import CarbonTrackedJobStatus
from carbontrack.api.wire import GpuCounter, TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt
from carbontrack.intensity.static import lookup
from carbontrack.state.status import restore, telemetry_update
from tests.cases.batches import telemetry_batch

KW = {"pue": 1.2, "intensity_g_per_kwh": 381.0}
H100 = "NVIDIA H100 80GB HBM3"
STARTED = 1000.0
"""The pod's status.startTime, on the operator's clock."""


def batch(boot: str, seq: int, per_gpu_j: float, *, final: bool = False, name: str = H100) -> TelemetryBatch:
    """Batch `seq` of boot `boot` of pod p0: its two GPUs at `per_gpu_j` each."""
    gpus = [GpuCounter(index=i, uuid=f"GPU-{i}", name=name, energy_joules=per_gpu_j) for i in range(2)]
    return telemetry_batch("p0", boot, seq, gpus=gpus, final=final, steps_seen=seq, global_step=seq)


def send(agg: JobAggregate, b: TelemetryBatch, at: float) -> Applied:
    """As received at `at` from pod p0, which holds two GPUs."""
    return agg.apply(b, Receipt(received_at=at, pod_started_at=STARTED, gpus=2), **KW)


def roundtrip(agg: JobAggregate) -> JobAggregate:
    """The aggregate a restarted operator builds from the status this one wrote."""
    body = json.loads(json.dumps(telemetry_update(agg, lookup("DE"), 5000.0)))
    return restore(CarbonTrackedJobStatus.model_validate(body["status"]), agg.limits)
