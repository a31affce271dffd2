"""Choosing the energy backend from configuration: explicit, never a silent fallback.

The default, `trainer`, needs no backend here (sidecar.feed takes the trainer's samples); this
module serves the sidecar's own measurement: `nvml` (opt-in), `simulated` and `none`.
"""

from __future__ import annotations

import logging

from carbontrack.energy.base import BackendUnavailable, EnergyBackend, UnavailableBackend
from carbontrack.sidecar.config import SidecarConfig

log = logging.getLogger("carbontrack.sidecar")


def make_backend(config: SidecarConfig, devices: list[str] | None) -> EnergyBackend:
    """`devices`: the trainer's NVML UUIDs (nvml mode), or None while they are not known."""
    if config.backend == "simulated":
        from carbontrack.energy.simulated import SimulatedBackend, parse_trace

        traces = [parse_trace(config.sim_trace) for _ in range(config.sim_gpus)]
        return SimulatedBackend(traces, has_energy_counter=config.sim_counter)
    if config.backend in ("none", "trainer"):
        return UnavailableBackend("energy measurement disabled by configuration")
    from carbontrack.energy.nvml import NvmlBackend, parse_visible_devices

    configured = parse_visible_devices(config.visible_devices)
    wanted = configured if configured is not None else devices
    if wanted is None:
        return UnavailableBackend("the trainer has not named its GPUs (no NVML inventory from its client)")
    try:
        return NvmlBackend(wanted, allow_all=config.allow_all_gpus)
    except BackendUnavailable as exc:
        log.error("NVML unavailable; reporting method=unavailable: %s", exc)
        return UnavailableBackend(str(exc))
