"""Per-job aggregation of sidecar telemetry: exact totals from cumulative counters.

Each sidecar boot is a *source* (pod, boot id, core.accounting.sources) reporting cumulative energy since
it booted. The job's energy is the sum over sources of their newest cumulative value, so duplicated,
reordered, lost or replayed batches never change it; only the growth of a source's counter is new
energy, and only new energy is turned into emissions, at the grid intensity in force when it arrived.
Sources are part of the CR status, so an operator restart resumes exactly where the last status write
left off. A batch whose growth no GPU could draw is refused (core.accounting.plausibility), and a new
boot never pushes a live one out (core.accounting.boots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from carbontrack.api.wire import DPParams, TelemetryBatch
from carbontrack.core.accounting.boots import HeldOut, boots_to_fold
from carbontrack.core.accounting.emissions import emissions_g
from carbontrack.core.accounting.folding import (
    COMPACT_FIXED_BYTES,
    FOLD_FIXED_BYTES,
    Limits,
    PodFold,
    compact_source_bytes,
    fold_bytes,
    folded_id_bytes,
    source_bytes,
    text_bytes,
)
from carbontrack.core.accounting.gpu_power import ceiling_w_per_gpu
from carbontrack.core.accounting.plausibility import (
    CAPACITY_REFUSALS,
    MIN_ELAPSED_S,
    REFUSALS,
    SENDING,
    Applied,
    Receipt,
    Verdict,
    pod_ceiling_j,
    refusal_key,
    refuse_replay,
)
from carbontrack.core.accounting.sources import Source, SourceGpu

__all__ = ["MAX_FIRST_EVALS", "Applied", "JobAggregate", "Receipt", "Source", "SourceGpu", "Verdict"]
"""JobAggregate with the types its callers read beside it (defined in plausibility and sources)."""

MAX_FIRST_EVALS = 64
"""Metrics whose first report is kept (status.evidence.firstMetrics is bounded like metrics)."""


@dataclass
class JobAggregate:
    """A job's telemetry: live sources, and the folded totals of finished boots (core.accounting.folding).

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
    reference that energy per metric point is measured from (core.accounting.efficiency)."""
    dp: DPParams | None = None
    checkpoint: tuple[int, str, float] | None = None
    """(step, uri, received_at on the operator's clock) of the newest checkpoint a trainer reported."""
    refused: dict[str, int] = field(default_factory=dict)
    """Batches refused per reason (REFUSALS), for status.telemetry.refused."""
    listening_since: float | None = None
    """When this aggregate received its first batch (the operator's clock): a boot restored from status
    counts as quiet only a live window after it (core.accounting.boots)."""
    held_out: HeldOut = field(default_factory=HeldOut)
    """Boots refused a place in their pod, until admitted (core.accounting.boots)."""

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

    def held_out_pods(self, now: float) -> set[str]:
        """Pods with a sidecar boot refused a place for too long (core.accounting.boots): unmeasured."""
        return self.held_out.pods(now, self.limits.live_window_s)

    def status_bytes(self) -> int:
        """JSON size of the status entries of sources and folds, an upper bound (core.accounting.folding),
        in the form the status writer picks: one object per source while that fits the budget, else
        the compact form (state.telemetry_status)."""
        full = self.full_status_bytes()
        return full if full <= self.limits.status_budget_bytes else min(full, self.compact_status_bytes())

    def full_status_bytes(self) -> int:
        """Sources as one object each, and folds."""
        live = sum(s.status_bytes() for s in self.sources.values())
        return live + sum(fold_bytes(f) for f in self.folded.values())

    def compact_status_bytes(self) -> int:
        """Sources as rows of the compact form, and folds."""
        live = COMPACT_FIXED_BYTES + sum(s.compact_status_bytes() for s in self.sources.values())
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
        if self.listening_since is None:
            self.listening_since = receipt.received_at
        result = self._apply(batch, receipt, pue=pue, intensity_g_per_kwh=intensity_g_per_kwh)
        pod, boot_id = batch.pod.name, batch.boot_id
        if result.verdict is Verdict.LIVE_BOOTS:
            self.held_out.refused(pod, boot_id, receipt.received_at, self.limits.live_window_s)
        elif result.verdict is Verdict.ACCEPTED:
            self.held_out.admitted(pod, boot_id)
        if result.verdict in REFUSALS:
            key = refusal_key(result.verdict)
            self.refused[key] = self.refused.get(key, 0) + 1
        return result

    def _room_for(self, batch: TelemetryBatch, now: float) -> Applied | list[Source]:
        """The pod's boots to fold so that a new source for this batch fits the limits
        (core.accounting.folding, core.accounting.boots), or the refusal."""
        pod, limits = batch.pod.name, self.limits
        mine = [s for s in self.sources.values() if s.pod == pod]
        if not mine and pod not in self.folded and len(self.pods()) >= limits.pods_per_job:
            return Applied(
                Verdict.TOO_MANY_PODS,
                message=f"the job already has {limits.pods_per_job} pods in status, the most it holds: "
                f"pod {pod} is not counted",
            )
        since = now if self.listening_since is None else self.listening_since
        folding = boots_to_fold(mine, now, limits, since)
        if folding is None:
            return Applied(
                Verdict.LIVE_BOOTS,
                message=f"pod {pod} has {limits.live_boots_per_pod} live sidecar boots (a batch within "
                f"{limits.live_window_s:g} s): boot {batch.boot_id} is counted once one of them goes quiet",
            )
        fold = self.folded.get(pod)
        if folding and fold is not None and not fold.has_room(len(folding), now, limits):
            return Applied(
                Verdict.LIVE_BOOTS,
                message=f"pod {pod} remembers {len(fold.marks)} folded boots, each folded or sent to within "
                f"{limits.live_window_s:g} s: boot {batch.boot_id} is counted once one of them goes quiet",
            )
        size, after = self.status_bytes(), self._status_bytes_with(batch, folding)
        if after > size and after > limits.status_budget_bytes:
            return Applied(
                Verdict.STATUS_FULL,
                message=f"status would grow past {limits.status_budget_bytes} bytes of telemetry sources "
                f"(now about {size}): the new source {pod}/{batch.boot_id} is not counted",
            )
        return folding

    def _status_bytes_with(self, batch: TelemetryBatch, folding: list[Source]) -> int:
        """status_bytes once the batch's new source is in and `folding` folded: the smaller of the two
        forms, as the status writer would pick it then."""
        pod, uuids = batch.pod.name, [g.uuid for g in batch.gpus]
        full = source_bytes(pod, batch.boot_id, batch.method, batch.method_reason[:300], uuids)
        compact = compact_source_bytes(pod, batch.boot_id)
        for s in folding:  # a folded boot's id stays, its source goes
            full += folded_id_bytes(s.boot_id) - s.status_bytes()
            compact += folded_id_bytes(s.boot_id) - s.compact_status_bytes()
        if folding and pod not in self.folded:
            new_fold = FOLD_FIXED_BYTES + text_bytes(pod)
            full, compact = full + new_fold, compact + new_fold
        full += self.full_status_bytes()
        if full <= self.limits.status_budget_bytes:
            return full
        return min(full, compact + self.compact_status_bytes())

    def _apply(
        self, batch: TelemetryBatch, receipt: Receipt, *, pue: float, intensity_g_per_kwh: float
    ) -> Applied:
        if len(batch.gpus) > max(receipt.gpus, 1):
            return Applied(
                Verdict.TOO_MANY_GPUS,
                message=f"the batch lists {len(batch.gpus)} GPUs; pod {batch.pod.name} holds "
                f"{max(receipt.gpus, 1)} (its nvidia.com/gpu and MIG resources)",
            )
        key = (batch.pod.name, batch.boot_id)
        src, folding = self.sources.get(key), list[Source]()
        fold = self.folded.get(batch.pod.name)
        if src is None and fold is not None and fold.knows(batch.boot_id):
            return self._apply_folded(fold, batch, receipt, pue=pue, intensity_g_per_kwh=intensity_g_per_kwh)
        if src is None:
            admitted = self._room_for(batch, receipt.received_at)
            if isinstance(admitted, Applied):
                return admitted
            src = Source(pod=batch.pod.name, boot_id=batch.boot_id, first_received_at=receipt.received_at)
            folding = admitted
        refusal = refuse_replay(src, batch) or self._refuse_implausible(src, batch, receipt)
        if refusal is not None:
            if refusal.verdict in SENDING and key in self.sources:
                src.heard_at = max(src.heard_at, receipt.received_at)  # still sending: live
            return refusal
        growth_j = max(batch.energy_joules - src.energy_j, 0.0)
        src.accept(batch, receipt.received_at, growth_j)
        self.sources[key] = src
        for old in folding:
            self.folded.setdefault(old.pod, PodFold(old.pod)).take(old, receipt.received_at, self.limits)
            del self.sources[(old.pod, old.boot_id)]
        return self._counted(batch, growth_j, receipt.received_at, pue, intensity_g_per_kwh)

    def _counted(
        self, batch: TelemetryBatch, growth_j: float, received_at: float, pue: float, g_per_kwh: float
    ) -> Applied:
        """An accepted batch whose `growth_j` is already in the totals: its emissions and its reports."""
        grams = emissions_g(growth_j, pue, g_per_kwh)
        self.emissions_g += grams
        self._take_reports(batch, received_at)
        self._take_first_reports(batch)
        return Applied(Verdict.ACCEPTED, energy_j=growth_j, emissions_g=grams)

    def _apply_folded(
        self,
        fold: PodFold,
        batch: TelemetryBatch,
        receipt: Receipt,
        *,
        pue: float,
        intensity_g_per_kwh: float,
    ) -> Applied:
        """A batch under a folded boot id: a duplicate unless its counter passed the energy counted for the
        boot, whose growth then counts within the pod's ceiling (core.accounting.folding says why)."""
        boot_id, pod = batch.boot_id, batch.pod.name
        fold.touch(boot_id, receipt.received_at)
        growth_j = batch.energy_joules - fold.marks[boot_id]
        if growth_j <= 1e-6:
            return Applied(
                Verdict.DUPLICATE,
                message=f"boot {boot_id} of pod {pod} ended and was folded into the pod's total at "
                f"{fold.marks[boot_id]:.6g} J",
            )
        refusal = self._refuse_past_pod_ceiling(batch, receipt, growth_j)
        if refusal is not None:
            return refusal
        fold.grow(boot_id, batch)
        return self._counted(batch, growth_j, receipt.received_at, pue, intensity_g_per_kwh)

    def _refuse_implausible(self, src: Source, batch: TelemetryBatch, receipt: Receipt) -> Applied | None:
        """None if the source's growth fits both ceilings (core.accounting.plausibility), else the refusal."""
        delta = batch.energy_joules - src.energy_j
        if src.seq >= 0:  # the rate since the source's first batch: a batch just before cannot move it
            if src.rate_anchor is None:  # restored from status: anchored at its restored figures
                src.rate_anchor = (src.received_at, src.energy_j)
            since, from_j = src.rate_anchor
            elapsed = max(receipt.received_at - since, MIN_ELAPSED_S)
            if (batch.energy_joules - from_j) / elapsed > receipt.ceiling_w:
                return Applied(
                    Verdict.ABSURD,
                    message=f"{(batch.energy_joules - from_j) / elapsed:.0f} W since the source's first "
                    f"batch arrived is beyond {receipt.gpus} GPU(s)",
                )
        return self._refuse_past_pod_ceiling(batch, receipt, delta)

    def _refuse_past_pod_ceiling(
        self, batch: TelemetryBatch, receipt: Receipt, delta: float
    ) -> Applied | None:
        """None if the pod's sources, folded ones included, with `delta` more stay within what its GPUs
        could draw since it started (core.accounting.plausibility), else the refusal."""
        pod_j = self.pod_energy_j(batch.pod.name) + max(delta, 0.0)
        gpu_w = ceiling_w_per_gpu(g.name for g in batch.gpus)  # the model this batch names (gpu_power)
        allowed_j = pod_ceiling_j(receipt, gpu_w)
        if pod_j > allowed_j + 1e-6:
            age_s = receipt.received_at - receipt.pod_started_at
            return Applied(
                Verdict.IMPLAUSIBLE,
                message=f"pod {batch.pod.name} would total {pod_j:.6g} J; {max(receipt.gpus, 1)} GPU(s) "
                f"at {gpu_w:g} W for its {age_s:.0f} s since it started allow {allowed_j:.6g} J",
            )
        return None

    def _take_reports(self, batch: TelemetryBatch, received_at: float) -> None:
        """The job-wide reports a batch carries: the newest eval of each metric, DP parameters, checkpoint."""
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
            self.checkpoint = (ck.step, ck.uri, received_at)

    def _take_first_reports(self, batch: TelemetryBatch) -> None:
        """Each metric's first report, with the job's totals once this batch is counted: the reference
        that core.accounting.efficiency measures energy per metric point from."""
        for report in batch.evals:
            for name, value in report.metrics.items():
                if name not in self.first_evals and len(self.first_evals) < MAX_FIRST_EVALS:
                    self.first_evals[name] = (report.step, value, self.energy_j, self.emissions_g)

    def projection(
        self, total_steps: int, pue: float, intensity_g_per_kwh: float
    ) -> tuple[float, float] | None:
        """(energy J, emissions g) at total_steps, from the recent J/step and the intensity now."""
        per_step = self.joules_per_step()
        if per_step is None:
            return None
        remaining = max(total_steps - self.global_step, 0) * per_step
        return self.energy_j + remaining, self.emissions_g + emissions_g(remaining, pue, intensity_g_per_kwh)
