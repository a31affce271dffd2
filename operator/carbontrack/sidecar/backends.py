"""Choosing the energy backend from configuration: explicit, never a silent fallback."""

from __future__ import annotations

import logging

from carbontrack.energy.base import BackendUnavailable, EnergyBackend, UnavailableBackend
from carbontrack.sidecar.config import SidecarConfig

log = logging.getLogger("carbontrack.sidecar")


def make_backend(config: SidecarConfig, visible: str | None) -> EnergyBackend:
    if config.backend == "simulated":
        from carbontrack.energy.simulated import SimulatedBackend, parse_trace

        traces = [parse_trace(config.sim_trace) for _ in range(config.sim_gpus)]
        return SimulatedBackend(traces, has_energy_counter=config.sim_counter)
    if config.backend == "none":
        return UnavailableBackend("energy measurement disabled by configuration")
    from carbontrack.energy.nvml import NvmlBackend, parse_visible_devices

    devices = parse_visible_devices(visible)
    if devices is None:
        return UnavailableBackend("the trainer did not say which GPUs are its own")
    try:
        return NvmlBackend(devices, allow_all=config.allow_all_gpus)
    except BackendUnavailable as exc:
        log.error("NVML unavailable; reporting method=unavailable: %s", exc)
        return UnavailableBackend(str(exc))
