"""A simulated GPU: deterministic power traces with exact ground-truth energy.

Used by tests, benchmarks and the demo wherever no GPU is present, and always chosen explicitly
(`CARBONTRACK_ENERGY_BACKEND=simulated`). Each trace knows its power at any time and the exact
integral over any interval, so attribution can be checked to the millijoule.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from carbontrack.api.wire import Method
from carbontrack.energy.base import GpuInfo, GpuLost


class Trace(Protocol):
    def power_w(self, t: float) -> float: ...

    def energy_j(self, t: float) -> float:
        """Exact energy from trace time 0 to t."""
        ...


@dataclass(frozen=True)
class Constant:
    watts: float

    def power_w(self, t: float) -> float:
        return self.watts

    def energy_j(self, t: float) -> float:
        return self.watts * max(t, 0.0)


@dataclass(frozen=True)
class Square:
    """Bursts: `high_w` for duty*period, then `low_w`, repeating (compute bursts vs data loading)."""

    high_w: float
    low_w: float
    period_s: float
    duty: float = 0.5

    def power_w(self, t: float) -> float:
        return self.high_w if (t % self.period_s) < self.duty * self.period_s else self.low_w

    def energy_j(self, t: float) -> float:
        t = max(t, 0.0)
        full, rest = divmod(t, self.period_s)
        on = self.duty * self.period_s
        per_period = self.high_w * on + self.low_w * (self.period_s - on)
        partial = self.high_w * min(rest, on) + self.low_w * max(rest - on, 0.0)
        return full * per_period + partial


@dataclass(frozen=True)
class Ramp:
    """Linear from start_w to end_w over duration_s, then holds end_w (warm-up, thermal drift)."""

    start_w: float
    end_w: float
    duration_s: float

    def power_w(self, t: float) -> float:
        if t >= self.duration_s:
            return self.end_w
        return self.start_w + (self.end_w - self.start_w) * max(t, 0.0) / self.duration_s

    def energy_j(self, t: float) -> float:
        t = max(t, 0.0)
        ramp_t = min(t, self.duration_s)
        ramp = (self.start_w + self.power_w(ramp_t)) / 2.0 * ramp_t
        return ramp + self.end_w * max(t - self.duration_s, 0.0)


class Piecewise:
    """Piecewise-linear trace through (t, watts) points, e.g. a recorded nvidia-smi log; holds the ends."""

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points:
            raise ValueError("a piecewise trace needs at least one point")
        pts = sorted(points)
        self.ts = [p[0] for p in pts]
        self.ws = [p[1] for p in pts]
        self.cum = [0.0]
        for i in range(1, len(pts)):
            self.cum.append(self.cum[-1] + (self.ws[i] + self.ws[i - 1]) / 2 * (self.ts[i] - self.ts[i - 1]))

    @classmethod
    def from_csv(cls, path: Path) -> Piecewise:
        with path.open() as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]  # header
        return cls([(float(r[0]), float(r[1])) for r in rows])

    def power_w(self, t: float) -> float:
        if t <= self.ts[0]:
            return self.ws[0]
        if t >= self.ts[-1]:
            return self.ws[-1]
        i = bisect.bisect_right(self.ts, t)
        frac = (t - self.ts[i - 1]) / (self.ts[i] - self.ts[i - 1])
        return self.ws[i - 1] + frac * (self.ws[i] - self.ws[i - 1])

    def _integral(self, t: float) -> float:
        """Energy from the first point to t (negative before it), holding the end values outside."""
        if t <= self.ts[0]:
            return self.ws[0] * (t - self.ts[0])
        if t >= self.ts[-1]:
            return self.cum[-1] + self.ws[-1] * (t - self.ts[-1])
        i = bisect.bisect_right(self.ts, t)
        return self.cum[i - 1] + (self.ws[i - 1] + self.power_w(t)) / 2 * (t - self.ts[i - 1])

    def energy_j(self, t: float) -> float:
        return self._integral(max(t, 0.0)) - self._integral(0.0)


def bursty(
    seed: int = 0,
    duration_s: float = 3600.0,
    high_w: float = 400.0,
    low_w: float = 90.0,
    ramp_s: float = 0.3,
) -> Piecewise:
    """A training-like trace: compute bursts of 1-2.5 s at high_w, 0.4-1.2 s troughs at low_w,
    joined by ramp_s slews (GPU power does not jump instantaneously). Deterministic per seed."""
    rng = random.Random(seed)
    points: list[tuple[float, float]] = []
    t = 0.0
    while t < duration_s:
        burst, trough = rng.uniform(1.0, 2.5), rng.uniform(0.4, 1.2)
        points += [
            (t, low_w),
            (t + ramp_s, high_w),
            (t + ramp_s + burst, high_w),
            (t + 2 * ramp_s + burst, low_w),
        ]
        t += 2 * ramp_s + burst + trough
    return Piecewise(points)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return math.isfinite(float(text))


def parse_trace(spec: str) -> Trace:
    """A trace from a short spec (the sidecar's CARBONTRACK_SIM_TRACE).

    `constant:300`, `square:400,120,2.0[,0.5]`, `ramp:100,400,30`, `bursty[:SEED]`, `csv:/path/trace.csv`.
    """
    kind, _, args = spec.partition(":")
    if kind == "csv":
        return Piecewise.from_csv(Path(args))
    nums = [float(x) for x in args.split(",") if x]
    if kind == "constant" and len(nums) == 1:
        return Constant(*nums)
    if kind == "square" and len(nums) in (3, 4):
        return Square(*nums)
    if kind == "ramp" and len(nums) == 3:
        return Ramp(*nums)
    if kind == "bursty" and len(nums) <= 1:
        return bursty(int(nums[0]) if nums else 0)
    raise ValueError(
        f"unknown trace {spec!r}: use constant:W, square:HIGH,LOW,PERIOD[,DUTY], ramp:A,B,S or csv:PATH"
    )


class SimulatedBackend:
    """GPUs that follow traces; counters are integer mJ like NVML's, optionally wrapping early."""

    method: Method = "simulated"

    def __init__(
        self,
        traces: Sequence[Trace],
        clock: Callable[[], float] = time.monotonic,
        *,
        start_t: float | None = None,
        counter_offset_mj: int = 0,
        counter_modulus_mj: int = 1 << 64,
        has_energy_counter: bool = True,
    ) -> None:
        self.traces = list(traces)
        self.clock = clock
        self.start_t = clock() if start_t is None else start_t
        self.offset_mj = counter_offset_mj
        self.modulus_mj = counter_modulus_mj
        self.has_counter = has_energy_counter
        self.lost: set[int] = set()

    def devices(self) -> list[GpuInfo]:
        return [
            GpuInfo(i, f"GPU-sim-{i:04d}", "Simulated GPU", self.has_counter) for i in range(len(self.traces))
        ]

    def true_energy_j(self, gpu: int, t: float) -> float:
        """Ground truth: exact energy of one GPU from backend start to monotonic time t."""
        return self.traces[gpu].energy_j(t - self.start_t)

    def energy_mj(self, gpu: int) -> int:
        if gpu in self.lost:
            raise GpuLost(f"simulated GPU {gpu} lost")
        if not self.has_counter:
            raise NotImplementedError("this simulated GPU has no energy counter")
        mj = math.floor(self.true_energy_j(gpu, self.clock()) * 1000 + 1e-6)
        return (mj + self.offset_mj) % self.modulus_mj

    def power_mw(self, gpu: int) -> int:
        if gpu in self.lost:
            raise GpuLost(f"simulated GPU {gpu} lost")
        return round(self.traces[gpu].power_w(self.clock() - self.start_t) * 1000)

    def close(self) -> None:
        pass
