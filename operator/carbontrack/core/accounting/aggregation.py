"""Per-job aggregation of sidecar telemetry: exact totals from cumulative counters.

Each sidecar boot is a *source* (pod, boot id) reporting cumulative energy since it booted. The job's
energy is the sum over sources of their newest cumulative value, so duplicated, reordered, lost or
replayed batches never change it; only the growth of a source's counter is new energy, and only new
energy is turned into emissions, at the grid intensity in force when it arrived. Sources are part of
the CR status, so an operator restart resumes exactly where the last status write left off.

Plausibility trusts nothing the sender says about time or hardware. A batch arrives with a Receipt the
operator made itself: its own clock, and from the pod object the pod's start time and the GPUs it may
hold. Two ceilings, each at MAX_W_PER_GPU per GPU: (1) everything a pod's sources report together,
every boot id included, cannot exceed what its GPUs could draw since the pod started (so a fresh boot
id cannot inject energy: a 1e14 J first batch was once accepted as 13,966 t CO2e); (2) a source's growth
between two batches cannot exceed that power over the time between their arrivals (a `sentAt` in the
future once made +1e13 J "plausible").
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from carbontrack.api.wire import DPParams, Sharing, TelemetryBatch
from carbontrack.core.accounting.emissions import emissions_g
from carbontrack.core.accounting.folding import (
    FOLD_FIXED_BYTES,
    Limits,
    PodFold,
    fold_bytes,
    source_bytes,
    text_bytes,
)
from carbontrack.core.events import Event

MAX_W_PER_GPU = 5000.0
"""No GPU draws more; a counter growing faster is refused as absurd, not added."""
WINDOW = 200
"""Per-step records kept per source for J/step and steps/s."""
CLOCK_SLACK_S = 5.0
"""Added to a pod's age: its start time is the node's clock, the receipt the operator's (NTP keeps them
well within this); costs at most 25 kJ per GPU of headroom, once per pod."""
MIN_ELAPSED_S = 1.0
"""Shortest interval the rate ceiling divides by: two batches that arrive together are not 'infinite W'."""


class Verdict(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # seq at or below the high-water mark: a replay, changes nothing
    BACKWARDS = "backwards"  # a cumulative counter or the step went down within one boot
    ABSURD = "absurd"  # growth between two batches beyond the pod's GPUs' power, on the operator's clock
    IMPLAUSIBLE = "implausible"  # the pod's sources together beyond its GPUs' power since it started
    TOO_MANY_PODS = "too-many-pods"  # a new pod beyond Limits.pods_per_job (core.folding)
    STATUS_FULL = "status-full"  # a new source would take status past Limits.status_budget_bytes


REFUSALS = (
    Verdict.BACKWARDS, Verdict.ABSURD, Verdict.IMPLAUSIBLE, Verdict.TOO_MANY_PODS, Verdict.STATUS_FULL,
)  # fmt: skip
"""Refusals of energy a sender claimed, counted per job (duplicates are a sidecar's normal retries)."""
CAPACITY_REFUSALS = (Verdict.TOO_MANY_PODS, Verdict.STATUS_FULL)
"""Refusals for room, not for what the batch claimed: the job's totals may miss energy (a condition)."""


def refusal_key(verdict: Verdict) -> str:
    """The verdict's key in JobAggregate.refused (status.telemetry.refused's field name)."""
    return verdict.value.replace("-", "_")


@dataclass(frozen=True)
class Receipt:
    """What the operator itself knows about a batch, never taken from it."""

    received_at: float
    """Unix time on the operator's clock when the request arrived."""
    pod_started_at: float
    """The pod's status.startTime (unix time): no sidecar of it measured anything before."""
    gpus: int
    """GPUs the pod may hold (see controller.podfacts), at least 1."""

    @property
    def ceiling_w(self) -> float:
        return MAX_W_PER_GPU * max(self.gpus, 1)

    @property
    def pod_ceiling_j(self) -> float:
        """The most energy the pod's GPUs can have used since it started."""
        return self.ceiling_w * (max(self.received_at - self.pod_started_at, 0.0) + CLOCK_SLACK_S)


MAX_FIRST_EVALS = 64
"""Metrics whose first report is kept (status.evidence.firstMetrics is bounded like metrics)."""


class StepWindow:
    """The newest WINDOW (steps, joules, seconds) records of a source, with their sums kept as they come
    and go: a status patch reads J/step and steps/s of every source, and summing 200 records three times
    per source was a quarter of the operator's CPU at 8000 pods (issue 15). The float sums are rebuilt
    from the records once per WINDOW evictions, so rounding from subtracting cannot accumulate; until the
    first eviction they are exactly the left-to-right sums.

    The records are kept as three arrays of machine numbers, not tuples of Python objects: 200 tuples
    of an int and two floats took 28 KiB a source, 224 MB at 8000 pods (the issue's budget for the whole
    operator is 400 MB); the arrays take under 5 KiB."""

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
    size_bytes: int = 0
    """Cached estimate of its status entry (core.folding); 0: not known."""
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


def _source_bytes(s: Source) -> int:
    """Its status entry's size estimate, kept until its next accepted batch (a new source's batch sums
    them over the job: recomputing 500 sources of 8 GPUs took 18 ms here, per new source)."""
    if not s.size_bytes:
        s.size_bytes = source_bytes(
            s.pod, s.boot_id, s.method, s.method_reason[:300], [g.uuid for g in s.gpus]
        )
    return s.size_bytes


@dataclass(frozen=True)
class Applied:
    verdict: Verdict
    energy_j: float = 0.0
    emissions_g: float = 0.0
    message: str = ""


@dataclass
class JobAggregate:
    """A job's telemetry: live sources, and the folded totals of finished boots (core.folding).

    Every total is over both, so folding changes none; sums use math.fsum, so a total does not depend
    on the order sources were met in (a restored aggregate's order is status's, sorted)."""

    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    folded: dict[str, PodFold] = field(default_factory=dict)
    """pod -> its finished boots, summed."""
    limits: Limits = field(default_factory=Limits)
    emissions_g: float = 0.0
    evals: dict[str, tuple[int, float]] = field(default_factory=dict)
    """metric -> (step, value) of the newest report."""
    first_evals: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)
    """metric -> (step, value, job energy J, job emissions g) when the first report of it arrived: the
    reference that energy per metric point is measured from (core.efficiency)."""
    dp: DPParams | None = None
    checkpoint: tuple[int, str, float] | None = None
    """(step, uri, received_at on the operator's clock) of the newest checkpoint a trainer reported."""
    refused: dict[str, int] = field(default_factory=dict)
    """Batches refused per reason (REFUSALS), for status.telemetry.refused."""

    @property
    def energy_j(self) -> float:
        return math.fsum([*(s.energy_j for s in self.sources.values()), *self._folded("energy_j")])

    def _folded(self, name: str) -> list[float]:
        return [getattr(f, name) for f in self.folded.values()]

    def pod_energy_j(self, pod: str) -> float:
        """Energy of all of a pod's sources (every sidecar boot in it, folded ones included)."""
        fold = self.folded.get(pod)
        live = [s.energy_j for s in self.sources.values() if s.pod == pod]
        return math.fsum([*live, fold.energy_j if fold else 0.0])

    @property
    def energy_upper_bound_j(self) -> float:
        """The energy plus the stated uncertainty of every method behind it."""
        live = [x for s in self.sources.values() for x in (s.energy_j, s.uncertainty_j)]
        return math.fsum([*live, *self._folded("energy_j"), *self._folded("uncertainty_j")])

    @property
    def shared_energy_j(self) -> float:
        """Board energy of GPUs not this job's alone (MIG, or other processes on them)."""
        live = [s.shared_energy_j for s in self.sources.values()]
        return math.fsum([*live, *self._folded("shared_energy_j")])

    def pods(self) -> set[str]:
        return {s.pod for s in self.sources.values()} | set(self.folded)

    def status_bytes(self) -> int:
        """Estimated JSON size of the sources and folds in status (an upper bound: core.folding)."""
        live = sum(_source_bytes(s) for s in self.sources.values())
        return live + sum(fold_bytes(f) for f in self.folded.values())

    def capacity_refusals(self) -> dict[Verdict, int]:
        """Batches refused for room (CAPACITY_REFUSALS), by verdict, where any were."""
        counts = {v: self.refused.get(refusal_key(v), 0) for v in CAPACITY_REFUSALS}
        return {v: n for v, n in counts.items() if n}

    def gpus(self, limit: int) -> list[tuple[str, SourceGpu]]:
        """(pod, gpu) of each pod's newest source, GPUs that are not exclusive first, at most `limit`."""
        newest: dict[str, Source] = {}
        for s in self.sources.values():
            if s.pod not in newest or s.sent_at >= newest[s.pod].sent_at:
                newest[s.pod] = s
        out = [(pod, g) for pod, s in sorted(newest.items()) for g in s.gpus]
        out.sort(key=lambda pg: pg[1].sharing == "exclusive")  # stable: pod order within each group
        return out[:limit]

    def measurement_events(self, announced: set[tuple[str, str, str]]) -> list[Event]:
        """Events for GPUs whose energy is not the job's alone and for pods measuring nothing, each once:
        `announced` (kept by the caller) remembers what was already said."""
        out: list[Event] = []
        shared_rule = (
            "it is shown (status.sharedGpuEnergyJoules) but staging and production carbon gates count it "
            "as unmeasured unless spec.carbon.acceptSharedGpuEnergy is true"
        )
        for pod, g in self.gpus(limit=1 << 16):
            key: tuple[str, str, str] = (pod, g.uuid, g.sharing)
            if g.sharing == "exclusive" or key in announced:
                continue
            announced.add(key)
            if g.sharing == "mig":
                text = f"GPU {g.uuid} of pod {pod} is in MIG mode: NVML has only the whole board's energy; "
                out.append(Event("Warning", "MigGpuEnergy", text + shared_rule))
            else:
                text = (
                    f"GPU {g.uuid} of pod {pod} also runs {g.foreign_processes} process(es) not of this job: "
                    "its energy is the whole board's; "
                )
                out.append(Event("Warning", "SharedGpuEnergy", text + shared_rule))
        for s in self.sources.values():
            key = (s.pod, s.boot_id, "unavailable")
            if s.method == "unavailable" and s.seq >= 0 and key not in announced:
                announced.add(key)
                reason = s.method_reason or "no reason given"
                out.append(Event("Warning", "EnergyUnmeasured", f"pod {s.pod} measures no energy: {reason}"))
        return out

    def projection_upper_g(self, total_steps: int, pue: float, intensity_g_per_kwh: float) -> float | None:
        """Projected emissions scaled by the stated uncertainty so far (upper / measured energy): for
        counters the bound does not grow with the run, so this only overstates, never understates."""
        projected = self.projection(total_steps, pue, intensity_g_per_kwh)
        if projected is None:
            return None
        ratio = self.energy_upper_bound_j / self.energy_j if self.energy_j > 0 else 1.0
        return projected[1] * ratio

    @property
    def global_step(self) -> int:
        live = (s.global_step for s in self.sources.values())
        return max([*live, *(f.global_step for f in self.folded.values())], default=0)

    @property
    def energy_measured(self) -> bool:
        """Every source measured energy: one `unavailable` sidecar would make the job look cheaper."""
        live = all(s.method != "unavailable" for s in self.sources.values())
        folded = all(f.unmeasured == 0 for f in self.folded.values())
        return bool(self.sources or self.folded) and live and folded

    def power_w(self, now: float, horizon_s: float = 30.0) -> float:
        """Sum of the sources' latest power, over sources heard from recently and not finished."""
        live = (s for s in self.sources.values() if not s.final and now - s.received_at <= horizon_s)
        return sum(s.power_w for s in live)

    def joules_per_step(self) -> float | None:
        """Job energy per global step: every replica works on each global step, so the sum over pods."""
        live = [s for s in self.sources.values() if not s.final] or list(self.sources.values())
        per_pod = [j for s in live if (j := s.joules_per_step()) is not None]
        return sum(per_pod) if per_pod else None

    def apply(
        self, batch: TelemetryBatch, receipt: Receipt, *, pue: float, intensity_g_per_kwh: float
    ) -> Applied:
        """Fold one batch in. Only growth beyond the source's high-water mark counts."""
        result = self._apply(batch, receipt, pue=pue, intensity_g_per_kwh=intensity_g_per_kwh)
        if result.verdict in REFUSALS:
            key = refusal_key(result.verdict)
            self.refused[key] = self.refused.get(key, 0) + 1
        return result

    def _room_for(self, batch: TelemetryBatch) -> Applied | None:
        """None if a new source for this batch fits the limits (core.folding), else the refusal."""
        pod, limits = batch.pod.name, self.limits
        known = pod in self.folded or any(s.pod == pod for s in self.sources.values())
        if not known and len(self.pods()) >= limits.pods_per_job:
            return Applied(
                Verdict.TOO_MANY_PODS,
                message=f"the job already has {limits.pods_per_job} pods in status, the most it holds: "
                f"pod {pod} is not counted",
            )
        uuids = [g.uuid for g in batch.gpus]
        grow = source_bytes(pod, batch.boot_id, batch.method, batch.method_reason[:300], uuids)
        oldest = self._to_fold(pod, extra=1)
        for s in oldest:  # a new boot beyond the live cap folds the oldest: its id stays, its source goes
            grow += text_bytes(s.boot_id) - _source_bytes(s)
        if oldest and pod not in self.folded:
            grow += FOLD_FIXED_BYTES + text_bytes(pod)
        size = self.status_bytes()
        if grow > 0 and size + grow > limits.status_budget_bytes:
            return Applied(
                Verdict.STATUS_FULL,
                message=f"status would grow past {limits.status_budget_bytes} bytes of telemetry sources "
                f"(now about {size}): the new source {pod}/{batch.boot_id} is not counted",
            )
        return None

    def _to_fold(self, pod: str, extra: int = 0, keep: tuple[str, str] | None = None) -> list[Source]:
        """The pod's live sources beyond the live cap (with `extra` sources to come), oldest first."""
        live = sorted(
            (s for k, s in self.sources.items() if s.pod == pod and k != keep),
            key=lambda s: (s.first_received_at, s.received_at, s.boot_id),
        )
        room = self.limits.live_boots_per_pod - extra - (1 if keep is not None else 0)
        return live[: max(len(live) - max(room, 0), 0)]

    def _fold(self, src: Source) -> None:
        """A finished boot into its pod's totals; its id is remembered so its batches are duplicates."""
        fold = self.folded.setdefault(src.pod, PodFold(src.pod))
        fold.boots += 1
        fold.boot_ids = [*fold.boot_ids, src.boot_id][-self.limits.folded_ids_per_pod :]
        fold.energy_j += src.energy_j
        fold.uncertainty_j += src.uncertainty_j
        fold.shared_energy_j += src.shared_energy_j
        fold.global_step = max(fold.global_step, src.global_step)
        fold.steps_seen += src.steps_seen
        fold.markers_dropped += src.markers_dropped
        fold.records_dropped += src.records_dropped
        fold.unmeasured += src.method == "unavailable"
        del self.sources[(src.pod, src.boot_id)]

    def _apply(
        self, batch: TelemetryBatch, receipt: Receipt, *, pue: float, intensity_g_per_kwh: float
    ) -> Applied:
        key = (batch.pod.name, batch.boot_id)
        src = self.sources.get(key)
        new = src is None
        if src is None:
            fold = self.folded.get(batch.pod.name)
            if fold is not None and fold.knows(batch.boot_id):
                return Applied(
                    Verdict.DUPLICATE,
                    message=f"boot {batch.boot_id} of pod {batch.pod.name} ended and was folded into the "
                    "pod's total",
                )
            refusal = self._room_for(batch)
            if refusal is not None:
                return refusal
            src = Source(pod=batch.pod.name, boot_id=batch.boot_id, first_received_at=receipt.received_at)
        if batch.seq <= src.seq:
            return Applied(Verdict.DUPLICATE, message=f"seq {batch.seq} already received (have {src.seq})")
        total = batch.energy_joules
        delta = total - src.energy_j
        if delta < -1e-6 or any(
            g.energy_joules < src.gpu_energy_j.get(g.index, 0.0) - 1e-6 for g in batch.gpus
        ):
            return Applied(
                Verdict.BACKWARDS, message=f"cumulative energy went down ({src.energy_j} -> {total})"
            )
        if batch.global_step < src.global_step or batch.steps_seen < src.steps_seen:
            return Applied(
                Verdict.BACKWARDS, message=f"steps went down ({src.global_step} -> {batch.global_step})"
            )
        elapsed = max(receipt.received_at - src.received_at, MIN_ELAPSED_S) if src.seq >= 0 else None
        if elapsed is not None and delta / elapsed > receipt.ceiling_w:
            return Applied(
                Verdict.ABSURD,
                message=f"{delta / elapsed:.0f} W since the previous batch arrived is beyond "
                f"{receipt.gpus} GPU(s)",
            )
        pod_j = self.pod_energy_j(batch.pod.name) + max(delta, 0.0)
        if pod_j > receipt.pod_ceiling_j + 1e-6:
            age_s, allowed_j = receipt.received_at - receipt.pod_started_at, receipt.pod_ceiling_j
            return Applied(
                Verdict.IMPLAUSIBLE,
                message=f"pod {batch.pod.name} would total {pod_j:.6g} J; {receipt.gpus} GPU(s) at "
                f"{MAX_W_PER_GPU:g} W for its {age_s:.0f} s since it started allow {allowed_j:.6g} J",
            )
        delta = max(delta, 0.0)
        grams = emissions_g(delta, pue, intensity_g_per_kwh)
        if elapsed is not None and receipt.received_at > src.received_at:
            src.power_w = delta / (receipt.received_at - src.received_at)
        src.seq, src.energy_j, src.sent_at = batch.seq, max(total, src.energy_j), batch.sent_at
        src.received_at = max(receipt.received_at, src.received_at)
        src.gpu_energy_j = {g.index: g.energy_joules for g in batch.gpus}
        src.steps_seen, src.global_step = batch.steps_seen, batch.global_step
        src.method, src.final = batch.method, batch.final
        src.markers_dropped, src.records_dropped = batch.markers_dropped, batch.records_dropped
        src.uncertainty_j, src.shared_energy_j = batch.uncertainty_joules, batch.shared_energy_joules
        src.method_reason = batch.method_reason
        src.size_bytes = 0
        src.gpus = [
            SourceGpu(g.index, g.uuid, g.sharing, g.method or batch.method, g.foreign_processes, g.name)
            for g in batch.gpus
        ]
        fresh, last = [], src.last_record_step
        for r in batch.steps:
            if r.step > last:  # a record delivered twice is recognised by its step
                fresh.append((r.step - r.first_step, r.energy_joules, r.duration_s))
                last = r.step
        src.records.extend(fresh)
        src.last_record_step = last
        for report in batch.evals:
            for name, value in report.metrics.items():
                if name not in self.evals or report.step >= self.evals[name][0]:
                    self.evals[name] = (report.step, value)
        if batch.dp is not None and (self.dp is None or batch.dp.step >= self.dp.step):
            self.dp = batch.dp
        ck, have = batch.checkpoint, self.checkpoint
        # every batch carries the newest report again: only a new one moves `at` (when it arrived)
        if ck is not None and (
            have is None or ck.step > have[0] or (ck.step == have[0] and ck.uri != have[1])
        ):
            self.checkpoint = (ck.step, ck.uri, receipt.received_at)
        self.sources[key] = src
        if new:
            for old in self._to_fold(batch.pod.name, keep=key):
                self._fold(old)
        self.emissions_g += grams
        for report in batch.evals:
            for name, value in report.metrics.items():
                if name not in self.first_evals and len(self.first_evals) < MAX_FIRST_EVALS:
                    self.first_evals[name] = (report.step, value, self.energy_j, self.emissions_g)
        return Applied(Verdict.ACCEPTED, energy_j=delta, emissions_g=grams)

    def projection(
        self, total_steps: int, pue: float, intensity_g_per_kwh: float
    ) -> tuple[float, float] | None:
        """(energy J, emissions g) at total_steps, from the recent J/step and the intensity now."""
        per_step = self.joules_per_step()
        if per_step is None:
            return None
        remaining = max(total_steps - self.global_step, 0) * per_step
        return self.energy_j + remaining, self.emissions_g + emissions_g(remaining, pue, intensity_g_per_kwh)
