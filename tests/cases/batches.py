"""TelemetryBatch objects for the unit tests: one builder for the wire model, the values each test's
own `batch()` passes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from carbontrack.api.wire import GpuCounter, Method, ObjectRef, PodRef, TelemetryBatch


def telemetry_batch(
    pod: str = "p0",
    boot: str = "b",
    seq: int = 1,
    *,
    joules: Sequence[float] = (),
    gpus: list[GpuCounter] | None = None,
    sent_at: float | None = None,
    namespace: str = "ml",
    job: str = "llama",
    method: Method = "simulated",
    **fields: Any,
) -> TelemetryBatch:
    """Batch `seq` of boot `boot` of `pod`, for job `namespace/job`: one counter per `joules` (GPU
    index in order) unless `gpus` are given; sent at 1000 + seq unless `sent_at` says; `fields` are
    the batch's other fields (steps, evals, global_step, ...)."""
    if gpus is None:
        gpus = [GpuCounter(index=i, energy_joules=j) for i, j in enumerate(joules)]
    return TelemetryBatch(
        job=ObjectRef(namespace=namespace, name=job),
        pod=PodRef(namespace=namespace, name=pod),
        boot_id=boot,
        seq=seq,
        sent_at=1000.0 + seq if sent_at is None else sent_at,
        method=method,
        gpus=gpus,
        **fields,
    )
