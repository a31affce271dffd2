"""The pod facts behind the plausibility ceilings: GPUs a pod may hold, and when it started."""

from __future__ import annotations

from typing import Any

import pytest

from carbontrack.api.wire import MAX_GPUS
from carbontrack.telemetry.pod_facts import gpu_allowance, pod_facts


def _c(limits: dict[str, Any] | None = None, requests: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "c", "resources": {"limits": limits or {}, "requests": requests or {}}}


@pytest.mark.parametrize(
    ("spec", "gpus"),
    [
        ({"containers": [_c({"nvidia.com/gpu": 1})]}, 1),
        ({"containers": [_c({"nvidia.com/gpu": "8"})]}, 8),
        ({"containers": [_c({"nvidia.com/gpu": 2}), _c({"nvidia.com/gpu": 2})]}, 4),
        ({"containers": [_c({"nvidia.com/gpu": 1})], "initContainers": [_c({"nvidia.com/gpu": 1})]}, 2),
        ({"containers": [_c(requests={"nvidia.com/gpu": 3})]}, 3),
        ({"containers": [_c({"nvidia.com/mig-1g.10gb": 2, "nvidia.com/mig-3g.40gb": 1})]}, 3),
        ({"containers": [_c({"cpu": "4", "memory": "1Gi"})]}, 1),  # at least one
        ({"containers": [_c({"nvidia.com/gpu": "lots"})]}, 1),
        ({"containers": [_c({"nvidia.com/gpu": 1000})]}, MAX_GPUS),
        ({"containers": [_c()], "resourceClaims": [{"name": "gpus"}]}, MAX_GPUS),
        ({}, 1),
    ],
)
def test_gpu_allowance(spec: dict[str, Any], gpus: int) -> None:
    assert gpu_allowance(spec) == gpus


def test_start_time_else_creation_time() -> None:
    meta = {"creationTimestamp": "2026-01-01T00:00:00Z"}
    started = pod_facts({"metadata": meta, "status": {"startTime": "2026-01-01T00:00:10Z"}}, "job")
    assert started.started_at == 1767225610.0 and started.owner == "job" and started.gpus == 1
    pending = pod_facts({"metadata": meta, "status": {}}, None)
    assert pending.started_at == 1767225600.0
