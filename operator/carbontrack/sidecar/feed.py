"""Energy from the trainer's own NVML samples (the default): the sidecar needs no GPU.

The trainer's client (carbontrack.trainer.sampler.NvmlSampler) reads the GPUs its process sees and sends
timestamped raw readings, keyed by NVML UUID, at its sampling rate and right after step markers.
Here they become cumulative joules per GPU (the same GpuMeter as the sidecar's own readings), and
the energy at any instant between two samples is interpolated linearly, so a step boundary is
placed at the marker's own timestamp (CLOCK_MONOTONIC, shared by every process of the node).

Several local ranks each report the GPUs they see; the feed keeps one GpuMeter per UUID and takes
every reading newer than the last one it used, from whichever rank: it is the same hardware counter,
so readings from different processes continue each other and nothing is counted twice.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field

from carbontrack.api.wire import MAX_GPUS, Method, Sharing
from carbontrack.core.accounting.attribution import COUNTER_BITS, MAX_PLAUSIBLE_W
from carbontrack.energy.base import GpuInfo
from carbontrack.energy.meter import GpuMeter
from carbontrack.sidecar.markers import GpuReport, GpuSample

log = logging.getLogger(__name__)

HISTORY = 2048
"""Readings kept per GPU for interpolation: 20 s at 100 readings a second, far beyond any wait."""


def sharing_of(report: GpuReport) -> Sharing:
    if report.mig_devices is not None:
        return "mig"
    return "shared" if report.foreign_processes > 0 else "exclusive"


@dataclass
class FedGpu:
    meter: GpuMeter
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    """(t, cumulative joules) of every reading used."""

    def joules_at(self, t: float) -> float:
        """Cumulative joules at t: interpolated between readings, 0 before the first, frozen after
        the last one when the GPU is lost (callers wait for a reading at or after t otherwise)."""
        h = self.history
        if not h or t <= h[0][0]:
            return 0.0
        if t >= h[-1][0]:
            return h[-1][1]
        i = bisect.bisect_left(h, (t, float("-inf")))
        (t0, j0), (t1, j1) = h[i - 1], h[i]
        return j0 + (j1 - j0) * (t - t0) / (t1 - t0) if t1 > t0 else j1


class TrainerFeed:
    def __init__(self) -> None:
        self.gpus: dict[str, FedGpu] = {}
        self.error = ""
        """The trainer's NVML did not load or init: its words, for method_reason."""
        self.inventories = 0
        self.first_t: float | None = None
        self.implausible = 0
        """Readings refused: beyond any GPU's power, or a counter beyond 64 bits."""

    def _gpu_or_new(self, uuid: str, has_counter: bool, name: str = "") -> FedGpu | None:
        gpu = self.gpus.get(uuid)
        if gpu is None:
            if len(self.gpus) >= MAX_GPUS:
                return None
            info = GpuInfo(len(self.gpus), uuid, name, has_counter)
            gpu = self.gpus[uuid] = FedGpu(GpuMeter.for_info(info))
            log.info("measuring a GPU of the trainer", extra={"gpu": uuid, "counter": has_counter})
        return gpu

    def on_inventory(self, reports: tuple[GpuReport, ...], error: str | None) -> None:
        self.inventories += 1
        if error and not self.gpus:
            self.error = error
        for r in reports:
            gpu = self._gpu_or_new(r.uuid, r.has_counter, r.name)
            if gpu is None:
                continue
            sharing = sharing_of(r)
            if sharing != gpu.meter.sharing:
                log.warning(
                    "gpu sharing changed",
                    extra={"gpu": r.uuid, "sharing": sharing, "foreign": r.foreign_processes},
                )
            gpu.meter.sharing, gpu.meter.foreign_processes = sharing, r.foreign_processes
            gpu.meter.lost = gpu.meter.lost or r.lost

    def on_sample(self, t_sample: float, samples: tuple[GpuSample, ...]) -> None:
        first: float | None = None
        for s in samples:
            t = t_sample + s.dt_s
            gpu = self._gpu_or_new(s.uuid, s.energy_mj is not None or s.power_mw is None)
            if gpu is None or gpu.meter.lost:
                continue
            m = gpu.meter
            if s.lost:
                m.lost = True
                log.error(
                    "gpu lost; its energy is frozen at the last reading",
                    extra={"gpu": s.uuid, "energy_j": m.joules},
                )
                continue
            if m.last_t is not None and t <= m.last_t:
                continue  # an older or equal reading, e.g. from another rank: the newer one stands
            if not self._plausible(m, s, t):
                self.implausible += 1
                continue
            if m.counter is not None and s.energy_mj is not None:
                m.counter_reading(s.energy_mj, t)
            elif m.integrator is not None and s.power_mw is not None:
                m.power_reading(s.power_mw / 1000.0, t)
            else:
                continue
            gpu.history.append((t, m.joules))
            first = t if first is None else max(first, t)
        if self.first_t is None and first is not None:
            self.first_t = first  # the latest first reading: from here on every GPU has one

    @staticmethod
    def _plausible(m: GpuMeter, s: GpuSample, t: float) -> bool:
        """A trainer's reading is data, not truth: no GPU draws more than MAX_PLAUSIBLE_W (a counter
        going backwards is a reset, handled by the tracker)."""
        if s.power_mw is not None and s.power_mw > MAX_PLAUSIBLE_W * 1000:
            return False
        if s.energy_mj is None or m.counter is None:
            return True
        if s.energy_mj >= 1 << COUNTER_BITS:
            return False
        last = m.counter.last_raw_mj
        if last is None or m.last_t is None:
            return True
        bound = MAX_PLAUSIBLE_W * (t - m.last_t) * 1000 + 1000
        if s.energy_mj < last:  # a wrap, or a reset whose new count is all energy since the reload
            return m.counter.modulus_mj - last + s.energy_mj <= bound or s.energy_mj <= bound
        return s.energy_mj - last <= bound

    def ready(self, t: float) -> bool:
        """Every live GPU has a reading at or after t, or the trainer said it has no NVML."""
        if not self.gpus:
            return bool(self.error)
        return all(
            g.meter.lost or (g.meter.last_t is not None and g.meter.last_t >= t) for g in self.gpus.values()
        )

    def energy_at(self, t: float) -> float:
        return sum(g.joules_at(t) for g in self.gpus.values())

    @property
    def meters(self) -> list[GpuMeter]:
        return [g.meter for g in self.gpus.values()]

    @property
    def total_joules(self) -> float:
        return sum(g.meter.joules for g in self.gpus.values())

    @property
    def method(self) -> Method:
        if not any(g.history for g in self.gpus.values()):
            return "unavailable"
        return (
            "power-integration" if any(g.meter.integrator for g in self.gpus.values()) else "energy-counter"
        )

    @property
    def reason(self) -> str:
        if self.method != "unavailable":
            return "the trainer's NVML samples"
        if self.error:
            return f"the trainer could not read NVML: {self.error}"
        return "no NVML samples from the trainer yet (its client sends them when libnvidia-ml.so.1 loads)"
