"""What a pod object says about the energy its sidecar can report: when it started, how many GPUs.

Read from the pod the telemetry authorization already fetches (telemetry.auth), cached beside its
owner, and turned into core.accounting.aggregation.Receipt ceilings. Nothing here comes from the sender.

The GPU allowance rule: the sum over all containers (init containers included: a native sidecar or
an init step may hold a device too; a sum only loosens the rule, never refuses an honest pod) of
`nvidia.com/gpu` and of every MIG slice resource (`nvidia.com/mig-*`: a slice reports its board's
energy, so it counts as a board); limits, or requests where a container sets only those. A batch that
lists more GPUs than the allowance is refused (422 too-many-gpus), and the ceilings scale with it. At
least 1: a pod whose GPUs do not show in its resources (a device plugin under another name,
`NVIDIA_VISIBLE_DEVICES` set by hand) still reports one GPU rather than being refused outright. A pod
that claims devices through DRA (`spec.resourceClaims`) may hold any number, which its spec does not
say: it gets the protocol's maximum, MAX_GPUS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carbontrack.api.contract import kube_time
from carbontrack.api.wire import MAX_GPUS

GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"


@dataclass(frozen=True)
class PodFacts:
    owner: str | None
    """The CarbonTrackedJob the pod runs for (through its Job), or None."""
    started_at: float
    """status.startTime as unix time; creationTimestamp (earlier, so looser) until the kubelet sets it."""
    gpus: int


def _device_count(value: Any) -> int:
    """An extended resource's count (always an integer for device plugins); 0 if unreadable."""
    try:
        return max(int(str(value)), 0)
    except ValueError:
        return 0


def gpu_allowance(spec: dict[str, Any]) -> int:
    """GPUs a pod may hold, by the rule in the module docstring."""
    if spec.get("resourceClaims"):
        return MAX_GPUS
    total = 0
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        counts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        total += sum(
            _device_count(v) for k, v in counts.items() if k == GPU_RESOURCE or k.startswith(MIG_PREFIX)
        )
    return min(max(total, 1), MAX_GPUS)


def pod_facts(pod: dict[str, Any], owner: str | None) -> PodFacts:
    started = kube_time((pod.get("status") or {}).get("startTime"))
    if started is None:
        started = kube_time(pod["metadata"].get("creationTimestamp")) or 0.0
    return PodFacts(owner=owner, started_at=started, gpus=gpu_allowance(pod.get("spec") or {}))
