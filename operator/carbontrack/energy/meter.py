"""The meter: one backend's raw readings turned into cumulative joules per GPU.

Counter GPUs go through core.attribution.CounterTracker (wrap and reset handled), counterless
ones through PowerIntegrator (trapezoid over samples). A lost GPU keeps its last value and is
flagged, once, in the log; the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from carbontrack.api.wire import Method
from carbontrack.core.attribution import CounterTracker, PowerIntegrator
from carbontrack.energy.base import EnergyBackend, GpuInfo, GpuLost

log = logging.getLogger(__name__)


@dataclass
class GpuMeter:
    info: GpuInfo
    counter: CounterTracker | None
    integrator: PowerIntegrator | None
    joules: float = 0.0
    lost: bool = False


class Meter:
    def __init__(self, backend: EnergyBackend, counter_modulus_mj: int | None = None) -> None:
        self.backend = backend
        self.gpus: list[GpuMeter] = []
        for info in backend.devices():
            if info.has_energy_counter:
                tracker = CounterTracker(modulus_mj=counter_modulus_mj or CounterTracker().modulus_mj)
                self.gpus.append(GpuMeter(info, tracker, None))
            else:
                self.gpus.append(GpuMeter(info, None, PowerIntegrator()))

    @property
    def method(self) -> Method:
        if self.backend.method == "energy-counter" and any(g.integrator for g in self.gpus):
            return "power-integration"
        return self.backend.method

    @property
    def needs_sampling(self) -> bool:
        """Counterless GPUs need regular power samples; counters can be read only when needed."""
        return any(g.integrator is not None for g in self.gpus)

    def read(self, t: float) -> float:
        """Read every GPU at monotonic time t; returns the pod's cumulative joules."""
        for g in self.gpus:
            if g.lost:
                continue
            try:
                if g.counter is not None:
                    g.joules = g.counter.update(self.backend.energy_mj(g.info.index), t)
                elif g.integrator is not None:
                    g.joules = g.integrator.sample(self.backend.power_mw(g.info.index) / 1000.0, t)
            except GpuLost as exc:
                g.lost = True
                log.error(
                    "gpu lost; its energy is frozen at the last reading: %s",
                    exc,
                    extra={"gpu": g.info.uuid, "energy_j": g.joules},
                )
        return self.total_joules

    @property
    def total_joules(self) -> float:
        return sum(g.joules for g in self.gpus)
