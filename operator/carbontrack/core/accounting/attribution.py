"""Energy attribution: raw hardware readings in, cumulative joules and per-step energy out.

Pure logic: no NVML, no clock, no sockets. Times are seconds on one monotonic clock (CLOCK_MONOTONIC
is shared by every process on a node, so the trainer's and the sidecar's readings compare), energy
is joules unless a name says `_mj`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COUNTER_BITS = 64
"""nvmlDeviceGetTotalEnergyConsumption returns an unsigned long long in mJ."""
MAX_PLAUSIBLE_W = 5000.0
"""No single GPU draws more; a larger apparent jump in a counter is a reset, not energy."""


@dataclass
class CounterTracker:
    """Cumulative energy since start from a hardware counter that may wrap or reset.

    A counter that goes backwards either wrapped (it passed its modulus; the energy used is what
    remained to the top plus the new value) or was reset (driver reload; the new value is what was
    used since). The two are told apart by plausibility: a wrap implies an energy no GPU can burn
    in the elapsed time only if it was really a reset.
    """

    modulus_mj: int = 1 << COUNTER_BITS
    last_raw_mj: int | None = None
    last_t: float = 0.0
    total_mj: int = 0
    wraps: int = 0
    resets: int = 0

    def update(self, raw_mj: int, t: float) -> float:
        """Feed one raw reading taken at time t; returns cumulative joules since the first reading."""
        if self.last_raw_mj is None:
            self.last_raw_mj, self.last_t = raw_mj, t
            return self.joules
        delta = raw_mj - self.last_raw_mj
        if delta < 0:
            wrapped = self.modulus_mj - self.last_raw_mj + raw_mj
            plausible_mj = MAX_PLAUSIBLE_W * max(t - self.last_t, 0.0) * 1000 + 1000
            if wrapped <= plausible_mj:
                delta = wrapped
                self.wraps += 1
            else:
                delta = raw_mj
                self.resets += 1
        self.total_mj += delta
        self.last_raw_mj, self.last_t = raw_mj, t
        return self.joules

    @property
    def joules(self) -> float:
        return self.total_mj / 1000.0


@dataclass
class PowerIntegrator:
    """Cumulative energy from power samples, by the trapezoid rule (the fallback without a counter)."""

    last_t: float | None = None
    last_w: float = 0.0
    total_j: float = 0.0

    def sample(self, watts: float, t: float) -> float:
        """Feed one power sample taken at time t; returns cumulative joules since the first sample."""
        if self.last_t is not None and t > self.last_t:
            self.total_j += (watts + self.last_w) / 2.0 * (t - self.last_t)
        if self.last_t is None or t >= self.last_t:
            self.last_t, self.last_w = t, watts
        return self.total_j


@dataclass(frozen=True)
class StepEnergy:
    """Energy attributed to the steps (first_step, step], between two markers."""

    step: int
    first_step: int
    energy_j: float
    duration_s: float


@dataclass
class StepAttributor:
    """Splits a pod's cumulative energy at step markers.

    The energy between two consecutive markers belongs to the later marker's step; the first marker
    gets everything since the sidecar started (start-up cost belongs to the job). A marker whose step
    is not above the last one (reordered, duplicated, or a restarted trainer repeating steps) closes
    nothing and is counted, so no energy is ever attributed twice.
    """

    start_t: float
    last_t: float = field(init=False)
    last_energy_j: float = 0.0
    last_step: int | None = None
    markers: int = 0
    out_of_order: int = 0

    def __post_init__(self) -> None:
        self.last_t = self.start_t

    def mark(self, step: int, t: float, energy_j: float) -> StepEnergy | None:
        """A marker for the end of `step` at time t, when the pod's cumulative energy was energy_j."""
        self.markers += 1
        if self.last_step is not None and step <= self.last_step:
            self.out_of_order += 1
            return None
        first = self.last_step if self.last_step is not None else max(step - 1, 0)
        record = StepEnergy(
            step=step,
            first_step=first,
            energy_j=max(energy_j - self.last_energy_j, 0.0),
            duration_s=max(t - self.last_t, 0.0),
        )
        self.last_step, self.last_t, self.last_energy_j = step, t, max(energy_j, self.last_energy_j)
        return record


@dataclass
class SequenceGaps:
    """Counts datagrams lost between a client and the sidecar from the client's sequence numbers.

    A new client id (a restarted trainer) starts a new sequence; losses of earlier clients are kept.
    A late (reordered) datagram fills the gap it was counted in.
    """

    client: str | None = None
    first_seq: int = 0
    max_seq: int = -1
    received: int = 0
    dropped_before: int = 0

    def see(self, client: str, seq: int) -> None:
        """Count one datagram of `client` with sequence number `seq`."""
        if client != self.client:
            self.dropped_before = self.dropped
            self.client, self.first_seq, self.max_seq, self.received = client, seq, seq - 1, 0
        self.received += 1
        self.max_seq = max(self.max_seq, seq)

    @property
    def dropped(self) -> int:
        current = max(self.max_seq - self.first_seq + 1 - self.received, 0) if self.client else 0
        return self.dropped_before + current
