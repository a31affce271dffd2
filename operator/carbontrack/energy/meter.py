"""The meter: raw readings turned into cumulative joules per GPU, each with its stated uncertainty.

Counter GPUs go through core.accounting.attribution.CounterTracker (wrap and reset handled), counterless
ones through PowerIntegrator (trapezoid over samples). A lost GPU keeps its last value and is
flagged, once, in the log; the others go on. The same GpuMeter serves both places readings come
from: the sidecar's own backend (Meter, below) and the trainer's samples (sidecar.feed).

Uncertainty (a bound on |measured - true| of the cumulative energy, README "uncertainty"):
- energy counter: the counter updates every COUNTER_UPDATE_S at most (NVIDIA does not document the
  period; 100 ms is the slowest we assume), so each end of a measurement window may lag by one
  update period: 2 x COUNTER_UPDATE_S x the highest power seen. A reset (driver reload) hides the
  energy between the last reading and the reload: the gap x the highest power seen is added.
- power integration: the trapezoid rule is exact when power moves linearly between two samples and
  off by at most |P1 - P0| x dt / 2 when it jumps once in between; the sum over intervals is stated.
- simulated: exact (integer-mJ counters), 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from carbontrack.api.wire import Method, Sharing
from carbontrack.core.accounting.attribution import CounterTracker, PowerIntegrator
from carbontrack.energy.base import EnergyBackend, GpuInfo, GpuLost

log = logging.getLogger(__name__)

COUNTER_UPDATE_S = 0.1
PEAK_WINDOW_S = 0.1
"""Power is estimated from counter growth over at least this long (1 mJ over 10 us is not 100 W)."""


@dataclass
class GpuMeter:
    info: GpuInfo
    counter: CounterTracker | None
    integrator: PowerIntegrator | None
    joules: float = 0.0
    lost: bool = False
    sharing: Sharing = "exclusive"
    foreign_processes: int = 0
    peak_w: float = 0.0
    extra_j: float = 0.0
    """Integration bound and reset gaps, accumulated."""
    last_t: float | None = None
    last_w: float = 0.0
    _window: tuple[float, float] | None = None

    @classmethod
    def for_info(cls, info: GpuInfo, counter_modulus_mj: int | None = None) -> GpuMeter:
        if info.has_energy_counter:
            modulus = counter_modulus_mj or CounterTracker().modulus_mj
            return cls(info, CounterTracker(modulus_mj=modulus), None, sharing=info.sharing)
        return cls(info, None, PowerIntegrator(), sharing=info.sharing)

    def counter_reading(self, raw_mj: int, t: float) -> float:
        assert self.counter is not None
        resets, before_t = self.counter.resets, self.last_t
        self.joules = self.counter.update(raw_mj, t)
        if before_t is not None and self.counter.resets > resets:
            self.extra_j += self.peak_w * max(t - before_t, 0.0)
            self._window = None
        if self._window is None:
            self._window = (t, self.joules)
        elif t - self._window[0] >= PEAK_WINDOW_S:
            self.peak_w = max(self.peak_w, (self.joules - self._window[1]) / (t - self._window[0]))
            self._window = (t, self.joules)
        self.last_t = t if before_t is None else max(t, before_t)
        return self.joules

    def power_reading(self, watts: float, t: float) -> float:
        assert self.integrator is not None
        if self.last_t is not None and t > self.last_t:
            self.extra_j += abs(watts - self.last_w) * (t - self.last_t) / 2
        self.joules = self.integrator.sample(watts, t)
        if self.last_t is None or t >= self.last_t:
            self.last_t, self.last_w = t, watts
        self.peak_w = max(self.peak_w, watts)
        return self.joules

    @property
    def method(self) -> Method:
        return "energy-counter" if self.counter is not None else "power-integration"

    def uncertainty_j(self, exact: bool = False) -> float:
        if exact:
            return 0.0
        counter = 2 * COUNTER_UPDATE_S * self.peak_w if self.counter is not None else 0.0
        return counter + self.extra_j


class Meter:
    def __init__(self, backend: EnergyBackend, counter_modulus_mj: int | None = None) -> None:
        self.backend = backend
        self.gpus: list[GpuMeter] = [GpuMeter.for_info(i, counter_modulus_mj) for i in backend.devices()]

    @property
    def method(self) -> Method:
        if self.backend.method == "energy-counter" and any(g.integrator for g in self.gpus):
            return "power-integration"
        return self.backend.method

    @property
    def reason(self) -> str:
        return str(getattr(self.backend, "reason", ""))

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
                    g.counter_reading(self.backend.energy_mj(g.info.index), t)
                elif g.integrator is not None:
                    g.power_reading(self.backend.power_mw(g.info.index) / 1000.0, t)
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
