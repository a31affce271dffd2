"""The one interface every energy backend satisfies, and the errors they share.

Backends report raw readings (an energy counter in mJ, instantaneous power in mW) per GPU of this
pod; turning them into joules per step is core.accounting.attribution's job, so every backend is measured the
same way. A backend is always chosen explicitly (configuration), never by silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from carbontrack.api.wire import Method, Sharing


class GpuLost(Exception):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST); its counter stays frozen."""


class BackendUnavailable(Exception):
    """The backend cannot run here (no NVML library, no driver, no GPU of ours)."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    """Position in this pod's list of GPUs (0..n-1), not the node-wide NVML index."""
    uuid: str
    name: str
    has_energy_counter: bool
    sharing: Sharing = "exclusive"
    """`mig` when MIG mode is on: NVML has energy only for the whole board, never per instance."""


class EnergyBackend(Protocol):
    method: Method

    def devices(self) -> list[GpuInfo]: ...

    def energy_mj(self, gpu: int) -> int:
        """Raw cumulative energy counter in millijoules; may wrap or reset. Raises GpuLost."""
        ...

    def power_mw(self, gpu: int) -> int:
        """Instantaneous (or driver-averaged) power in milliwatts. Raises GpuLost."""
        ...

    def close(self) -> None: ...


class UnavailableBackend:
    """No measurement at all: the sidecar reports `method: unavailable` upward rather than invent numbers."""

    method: Method = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def devices(self) -> list[GpuInfo]:
        return []

    def energy_mj(self, gpu: int) -> int:
        raise GpuLost(self.reason)

    def power_mw(self, gpu: int) -> int:
        raise GpuLost(self.reason)

    def close(self) -> None:
        pass
