"""What status keeps of the job's telemetry: each source's counters, compact profiles of the rest,
refusals by reason, folded boots, and the pods not measured; each list bounded so status stays small."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from carbontrack.api.base import KubeModel
from carbontrack.api.wire import Sharing


class SourceStatus(KubeModel):
    """High-water mark of one sidecar boot, kept in status so a restarted operator resumes exactly."""

    pod: str
    boot_id: str
    seq: int = Field(ge=0)
    energy_joules: float = Field(ge=0)
    gpu_energy_joules: list[float] = Field(default_factory=list)
    """Cumulative joules per GPU index, for the counters-went-backwards check."""
    steps_seen: int = Field(0, ge=0)
    global_step: int = Field(0, ge=0)
    last_record_step: int = -1
    sent_at: float = 0
    """The sidecar's clock: shown, never trusted."""
    received_at: float = 0
    """The operator's clock when the newest accepted batch arrived (the plausibility checks use it)."""
    first_received_at: float = 0
    """The operator's clock when its first batch arrived: a pod's oldest boot folds first."""
    method: str = "unavailable"
    markers_dropped: int = Field(0, ge=0)
    records_dropped: int = Field(0, ge=0)
    final: bool = False
    window: list[float] = Field(default_factory=list, max_length=3)
    """Sums over the recent per-step records: [steps, joules, seconds]. Restored as one record, so J/step
    and steps/s (hence the carbon projection) are the same after a restart as before it."""
    uncertainty_joules: float = Field(0, ge=0)
    """Stated bound of this source's energy (its method's uncertainty)."""
    shared_energy_joules: float = Field(0, ge=0)
    """Board energy of its MIG or shared GPUs, included in energyJoules."""
    method_reason: str = Field("", max_length=300)
    """Why the method is what it is (always set for unavailable)."""
    gpu_uuids: list[str] = Field(default_factory=list, max_length=64)
    gpu_sharing: list[Sharing] = Field(default_factory=list, max_length=64)
    """Per GPU index, as gpuEnergyJoules: NVML UUID and exclusive | shared | mig."""
    gpu_names: list[str] = Field(default_factory=list, max_length=64)
    """Per GPU index: the product name NVML gives (empty when the sidecar did not send it)."""


MAX_SOURCE_PROFILES = 16
"""Distinct (method, reason) pairs the compact form lists; past them a source keeps its method alone."""
PROFILE_REASON_CHARS = 60


class SourceProfile(KubeModel):
    """What many sources of a big job share: how they measure, and how many do."""

    method: str = "unavailable"
    method_reason: str = Field("", max_length=PROFILE_REASON_CHARS)
    """The start of the reason (the EnergyUnmeasured event carries it whole)."""
    sources: int = Field(0, ge=0)
    """Sources with this profile."""


class CompactSources(KubeModel):
    """Every live source of a job too big for one object per source: one column per field, entry i of
    each column is source i, sorted by pod and boot id. It keeps what a restarted operator needs for
    exact totals (each source's high-water mark and cumulative energy), not the per-GPU readings."""

    pods: list[str] = Field(default_factory=list)
    boot_ids: list[str] = Field(default_factory=list)
    seq: list[int] = Field(default_factory=list)
    energy_joules: list[float] = Field(default_factory=list)
    """Cumulative joules since the boot: the source's share of every total."""
    uncertainty_joules: list[float] = Field(default_factory=list)
    shared_energy_joules: list[float] = Field(default_factory=list)
    global_step: list[int] = Field(default_factory=list)
    steps_seen: list[int] = Field(default_factory=list)
    received_at: list[int] = Field(default_factory=list)
    """The operator's clock when the newest batch arrived, in whole seconds (rounded down)."""
    first_received_at: list[int] = Field(default_factory=list)
    profile: list[int] = Field(default_factory=list)
    """Index into profiles."""
    profiles: list[SourceProfile] = Field(default_factory=list, max_length=MAX_SOURCE_PROFILES)

    @model_validator(mode="after")
    def _columns_match(self) -> CompactSources:
        columns = (self.boot_ids, self.seq, self.energy_joules, self.uncertainty_joules)
        more = (self.shared_energy_joules, self.global_step, self.steps_seen, self.received_at)
        if any(len(c) != len(self.pods) for c in (*columns, *more, self.first_received_at, self.profile)):
            raise ValueError("every column has one entry per source")
        if any(not 0 <= i < len(self.profiles) for i in self.profile):
            raise ValueError("a profile index names no profile")
        return self


class RefusedCounts(KubeModel):
    """Telemetry batches refused for what they claimed, by reason (the 422s and 429s of the table)."""

    backwards: int = Field(0, ge=0)
    """A cumulative counter or the step went down within one sidecar boot."""
    absurd: int = Field(0, ge=0)
    """Growth since the source's first batch arrived beyond the pod's GPUs x 5 kW."""
    implausible: int = Field(0, ge=0)
    """A pod's sources together beyond its GPUs x 5 kW since the pod started (a new boot id included)."""
    too_many_pods: int = Field(0, ge=0)
    """A batch from a new pod when status already holds the most pods it keeps (2000): not counted."""
    status_full: int = Field(0, ge=0)
    """A batch that would add a source past the status size budget (512 KiB of sources): not counted."""
    finished: int = Field(0, ge=0)
    """A batch that arrived after the job finished (Succeeded, Failed, or Halted with its workers
    stopped) and its final-flush grace period: 409 finished, not counted, so the totals stay final."""
    live_boots: int = Field(0, ge=0)
    """A new boot id while its pod's two sidecar boots are live (a batch within 60 s): counted later."""
    too_many_gpus: int = Field(0, ge=0)
    """A batch listing more GPUs than its pod's resources give it."""


MAX_FOLDED_IDS = 64


class FoldedPodStatus(KubeModel):
    """The finished sidecar boots of one pod, summed, so status stays bounded however often it restarts.

    A quiet boot folds when a new boot of its pod needs its place; its energy stays in every total."""

    pod: str
    boots: int = Field(0, ge=0)
    """Boots folded in, ever."""
    boot_ids: list[str] = Field(default_factory=list, max_length=MAX_FOLDED_IDS)
    """The newest folded boot ids, oldest first (16, more while older ones are still sent to): a batch
    under one of them that adds no energy to it is a duplicate (409)."""
    boot_energies_joules: list[float] = Field(default_factory=list, max_length=MAX_FOLDED_IDS)
    """The cumulative energy counted for each of bootIds, in the same order: a batch under one of them
    whose counter passes it adds the difference (a running sidecar's boot folded while its batches sat
    below a claim made under its boot id)."""
    energy_joules: float = Field(0, ge=0)
    uncertainty_joules: float = Field(0, ge=0)
    shared_energy_joules: float = Field(0, ge=0)
    global_step: int = Field(0, ge=0)
    steps_seen: int = Field(0, ge=0)
    markers_dropped: int = Field(0, ge=0)
    records_dropped: int = Field(0, ge=0)
    unmeasured: int = Field(0, ge=0)
    """Folded boots that measured no energy (method unavailable)."""


MAX_STATUS_GPUS = 64


class GpuStatus(KubeModel):
    """One GPU a pod of the job is measured on, and whether its energy is the job's alone."""

    uuid: str = Field(max_length=96)
    index: int = Field(ge=0)
    """Position among the pod's GPUs."""
    pod: str
    sharing: Sharing
    """exclusive; mig (NVML has only the whole board's energy); shared (other processes use it)."""
    method: str
    """energy-counter | power-integration | simulated | unavailable."""
    foreign_processes: int = Field(0, ge=0)
    name: str = Field("", max_length=96)
    """Product name as NVML gives it (e.g. NVIDIA H100 80GB HBM3): what a report calls the hardware."""


MAX_UNMEASURED_PODS = 32


class UnmeasuredPod(KubeModel):
    """A running pod of the job from which no telemetry batch was accepted within the grace period."""

    pod: str
    started_at: datetime
    """When its containers (the sidecar among them) were initialized: the grace period counts from it."""


class TelemetryStatus(KubeModel):
    """Where the totals come from: one entry per live (pod, sidecar boot), and per pod its folded boots."""

    sources: list[SourceStatus] = Field(default_factory=list)
    """One object per source while they fit the status budget; empty when `compact` holds them."""
    compact: CompactSources | None = None
    """Every source as columns, when one object per source would pass the status budget (512 KiB): a job
    of 2,000 eight-GPU pods fits. status.gpus still lists 64 GPUs; profiles count sources by method."""
    folded: list[FoldedPodStatus] = Field(default_factory=list)
    """Per pod, the boots that ended (at most two boots per pod stay in sources; only a quiet one folds)."""
    refused: RefusedCounts = Field(default_factory=RefusedCounts)
    last_batch_at: datetime | None = None
    joules_per_step: float | None = None
    steps_per_second: float | None = None
    unmeasured_pods: list[UnmeasuredPod] = Field(default_factory=list, max_length=MAX_UNMEASURED_PODS)
    """Running pods with no batch accepted within two status intervals plus start-up, or whose sidecar boot
    has been refused a place for two live windows, oldest first, at most 32 (unmeasuredPodCount counts
    them all): the job's energy is a lower bound while any is listed, and staging and production carbon
    gates fail closed on it."""
    unmeasured_pod_count: int = Field(0, ge=0)
    """Every unmeasured pod, listed in unmeasuredPods or not."""
