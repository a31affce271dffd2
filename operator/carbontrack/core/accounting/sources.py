"""One sidecar boot's telemetry as the operator keeps it: its high-water marks and recent step records.

Each sidecar boot is a *source* (pod, boot id) reporting cumulative energy since it booted. A `Source`
holds everything needed to resume after a restart, so it is written to and restored from the CR status;
its `StepWindow` holds the newest per-step records, from which J/step and steps/s are read.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from carbontrack.api.wire import Sharing, TelemetryBatch
from carbontrack.core.accounting.folding import compact_source_bytes, source_bytes

WINDOW = 200
"""Per-step records kept per source for J/step and steps/s."""


class StepWindow:
    """The newest WINDOW (steps, joules, seconds) records of a source, with their sums kept as they come
    and go: a status patch reads J/step and steps/s of every source, so the sums are not recomputed per
    read. The float sums are rebuilt from the records once per WINDOW evictions, so rounding from
    subtracting cannot accumulate; until the first eviction they are exactly the left-to-right sums.

    The records are kept as three arrays of machine numbers, not tuples of Python objects, so a source's
    window takes a few KiB however many sources a fleet has (benchmarks/RESULTS.md has the figures)."""

    __slots__ = ("_evicted", "_joules", "_seconds", "_steps", "joules", "seconds", "steps")

    def __init__(self) -> None:
        self._steps = array("q")
        self._joules = array("d")
        self._seconds = array("d")
        self._evicted = 0
        self.steps = 0
        self.joules = 0.0
        self.seconds = 0.0

    def append(self, record: tuple[int, float, float]) -> None:
        self.extend([record])

    def extend(self, records: list[tuple[int, float, float]]) -> None:
        """Add records (oldest first); the sums move by the new and the evicted ones, added left to right
        (`sum(values, start)`), in C: a batch of 100 records costs one pass, not 100 Python updates."""
        if not records:
            return
        steps, joules, seconds = zip(*records, strict=True)
        self._steps.extend(steps)
        self._joules.extend(joules)
        self._seconds.extend(seconds)
        self.steps += sum(steps)
        self.joules = sum(joules, self.joules)
        self.seconds = sum(seconds, self.seconds)
        over = len(self._steps) - WINDOW
        if over <= 0:
            return
        gone = (self._steps[:over], self._joules[:over], self._seconds[:over])
        del self._steps[:over], self._joules[:over], self._seconds[:over]
        self._evicted += over
        if self._evicted >= WINDOW:
            self._evicted = 0
            self.steps, self.joules, self.seconds = sum(self._steps), sum(self._joules), sum(self._seconds)
            return
        self.steps -= sum(gone[0])
        self.joules -= sum(gone[1])
        self.seconds -= sum(gone[2])

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        return zip(self._steps, self._joules, self._seconds, strict=True)


@dataclass(frozen=True)
class SourceGpu:
    """One GPU of a source as its newest batch described it: whose energy the reading is, and how."""

    index: int
    uuid: str
    sharing: Sharing = "exclusive"
    method: str = "unavailable"
    foreign_processes: int = 0
    name: str = ""
    """The product name NVML gives; empty from a sidecar that does not send it."""


@dataclass
class Source:
    """High-water mark of one sidecar boot: everything needed to resume after a restart."""

    pod: str
    boot_id: str
    seq: int = -1
    energy_j: float = 0.0
    gpu_energy_j: dict[int, float] = field(default_factory=dict)
    steps_seen: int = 0
    global_step: int = 0
    last_record_step: int = -1
    sent_at: float = 0.0
    """The sender's clock: shown, never used for a decision."""
    received_at: float = 0.0
    """The operator's clock when the newest accepted batch arrived."""
    first_received_at: float = 0.0
    """The operator's clock when its first batch arrived: the pod's oldest boot folds first."""
    heard_at: float = 0.0
    """The operator's clock when its newest batch refused as backwards or beyond a ceiling arrived
    (plausibility.SENDING): a boot that is sending is live (core.accounting.boots), even while a token
    holder's claims crowd its batches out or its counters sit below a claim made under its boot id."""
    rate_anchor: tuple[float, float] | None = None
    """(arrival, energy J) of its first batch this operator accepted (not kept in status: a restored
    source anchors at its restored figures): the rate ceiling measures growth from there, a point no
    later batch can move (aggregation._refuse_implausible)."""
    size_bytes: int = 0
    """Cached estimate of its status entry (core.accounting.folding); 0: not known."""
    compact_size_bytes: int = 0
    """Cached estimate of its row in the compact form; 0: not known."""
    power_w: float = 0.0
    method: str = "unavailable"
    markers_dropped: int = 0
    records_dropped: int = 0
    final: bool = False
    uncertainty_j: float = 0.0
    """Stated bound of the newest batch's energy (sum over its GPUs)."""
    shared_energy_j: float = 0.0
    """Board energy of this source's MIG or shared GPUs (part of energy_j)."""
    method_reason: str = ""
    gpus: list[SourceGpu] = field(default_factory=list)
    records: StepWindow = field(default_factory=StepWindow)
    """(steps covered, joules, seconds) of recent per-step records, with their sums."""

    def window(self) -> tuple[int, float, float]:
        """(steps, joules, seconds) summed over the recent records."""
        return (self.records.steps, self.records.joules, self.records.seconds)

    def joules_per_step(self) -> float | None:
        steps = self.records.steps
        return self.records.joules / steps if steps else None

    def steps_per_s(self) -> float | None:
        seconds = self.records.seconds
        return self.records.steps / seconds if seconds > 0 else None

    def status_bytes(self) -> int:
        """Its status entry's size estimate, kept until its next accepted batch: a new source's batch sums
        the estimates over the whole job, which must not cost a pass over every source's GPUs."""
        if not self.size_bytes:
            self.size_bytes = source_bytes(
                self.pod, self.boot_id, self.method, self.method_reason[:300], [g.uuid for g in self.gpus]
            )
        return self.size_bytes

    def compact_status_bytes(self) -> int:
        """Its row's size estimate in the compact form (state.telemetry_status): its pod and boot id
        never change, so neither does the estimate, kept once known."""
        if not self.compact_size_bytes:
            self.compact_size_bytes = compact_source_bytes(self.pod, self.boot_id)
        return self.compact_size_bytes

    def accept(self, batch: TelemetryBatch, received_at: float, growth_j: float) -> None:
        """Take an accepted batch as the new high-water mark; `growth_j` is its energy beyond the last one.

        The power is the growth over the time between the two arrivals on the operator's clock (none for
        a source's first batch)."""
        if self.seq >= 0 and received_at > self.received_at:
            self.power_w = growth_j / (received_at - self.received_at)
        # a batch with a lower seq may raise the counters (plausibility.refuse_replay): both marks only rise
        self.seq, self.energy_j, self.sent_at = (
            max(batch.seq, self.seq),
            max(batch.energy_joules, self.energy_j),
            batch.sent_at,
        )
        self.rate_anchor = self.rate_anchor or (received_at, batch.energy_joules)
        self.received_at = max(received_at, self.received_at)
        self.gpu_energy_j = {g.index: g.energy_joules for g in batch.gpus}
        self.steps_seen, self.global_step = batch.steps_seen, batch.global_step
        self.method, self.final = batch.method, batch.final
        self.markers_dropped, self.records_dropped = batch.markers_dropped, batch.records_dropped
        self.uncertainty_j, self.shared_energy_j = batch.uncertainty_joules, batch.shared_energy_joules
        self.method_reason = batch.method_reason
        self.size_bytes = 0
        self.gpus = [
            SourceGpu(g.index, g.uuid, g.sharing, g.method or batch.method, g.foreign_processes, g.name)
            for g in batch.gpus
        ]
        self._take_records(batch)

    def _take_records(self, batch: TelemetryBatch) -> None:
        """The batch's step records past the newest kept: a record delivered twice is known by its step."""
        fresh, last = [], self.last_record_step
        for r in batch.steps:
            if r.step > last:
                fresh.append((r.step - r.first_step, r.energy_joules, r.duration_s))
                last = r.step
        self.records.extend(fresh)
        self.last_record_step = last
