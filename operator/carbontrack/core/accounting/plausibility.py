"""What a telemetry batch is checked against, and the verdicts of the check.

Plausibility trusts nothing the sender says about time, and about hardware only what cannot help it. A
batch arrives with a `Receipt` the operator made itself: its own clock, and from the pod object the pod's
start time and the GPUs it may hold. A batch listing more GPUs than that is refused outright. Two
ceilings:

1. everything a pod's sources report together, every boot id included, cannot exceed what its GPUs
   could draw since the pod started, so a fresh boot id cannot inject energy: per GPU, twice the board
   limit of the model the batch names, MAX_W_PER_GPU for a model not in core.accounting.gpu_power;
2. a source's growth since its first batch cannot exceed MAX_W_PER_GPU per GPU over the time since that
   batch arrived on the operator's clock, so a `sentAt` in the future cannot make a jump plausible, and
   a batch someone else sends under the source's boot id just before the sidecar's cannot make the
   sidecar's growth look fast (not the model's limit: two arrivals can be closer together than the two
   readings were, when the earlier batch waited on the network, and an honest batch must not look fast
   for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from carbontrack.api.wire import TelemetryBatch
from carbontrack.core.accounting.gpu_power import MAX_W_PER_GPU
from carbontrack.core.accounting.sources import Source

CLOCK_SLACK_S = 5.0
"""Added to a pod's age: its start time is the node's clock, the receipt the operator's (NTP keeps them
well within this); costs at most 25 kJ per GPU of headroom, once per pod."""
MIN_ELAPSED_S = 1.0
"""Shortest interval the rate ceiling divides by: two batches that arrive together are not 'infinite W'."""


class Verdict(Enum):
    """What became of a batch: accepted, a harmless duplicate, or refused and why."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # seq at or below the high-water mark and no more energy: changes nothing
    BACKWARDS = "backwards"  # a newer seq, adding no energy, whose energy or steps went down within one boot
    ABSURD = "absurd"  # growth since the source's first batch beyond the pod's GPUs' power (operator's clock)
    IMPLAUSIBLE = "implausible"  # the pod's sources together beyond its GPUs' power since it started
    TOO_MANY_PODS = "too-many-pods"  # a new pod beyond Limits.pods_per_job (core.accounting.folding)
    STATUS_FULL = "status-full"  # a new source would take status past Limits.status_budget_bytes
    FINISHED = "finished"  # the job's training ended and its final-flush grace is over (state.registry)
    LIVE_BOOTS = "live-boots"  # a new boot id while the pod's live boots are all live (core.accounting.boots)
    TOO_MANY_GPUS = "too-many-gpus"  # more GPUs listed than the pod may hold


REFUSALS = (
    Verdict.BACKWARDS,
    Verdict.ABSURD,
    Verdict.IMPLAUSIBLE,
    Verdict.TOO_MANY_PODS,
    Verdict.STATUS_FULL,
    Verdict.LIVE_BOOTS,
    Verdict.TOO_MANY_GPUS,
)
"""Refusals of energy a sender claimed, counted per job (duplicates are a sidecar's normal retries)."""

SENDING = (Verdict.BACKWARDS, Verdict.ABSURD, Verdict.IMPLAUSIBLE)
"""Refusals of a batch whose counters a claim under its boot id (or beside it) outbid or crowded out:
the boot that sent it is still sending (core.accounting.boots). A duplicate is not: an old batch replayed
says nothing of whether its boot still runs."""

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
    """GPUs the pod may hold (see telemetry.pod_facts), at least 1."""

    @property
    def ceiling_w(self) -> float:
        """The most power the pod's GPUs draw, whatever their model."""
        return MAX_W_PER_GPU * max(self.gpus, 1)

    @property
    def pod_ceiling_j(self) -> float:
        """The most energy the pod's GPUs can have used since it started, whatever their model."""
        return pod_ceiling_j(self, MAX_W_PER_GPU)


def pod_ceiling_j(receipt: Receipt, gpu_w: float) -> float:
    """The most energy the pod's GPUs, each drawing at most `gpu_w`, can have used since it started."""
    age_s = max(receipt.received_at - receipt.pod_started_at, 0.0)
    return gpu_w * max(receipt.gpus, 1) * (age_s + CLOCK_SLACK_S)


@dataclass(frozen=True)
class Applied:
    """The outcome of one batch: its verdict, and the energy and emissions it added when accepted."""

    verdict: Verdict
    energy_j: float = 0.0
    emissions_g: float = 0.0
    message: str = ""


def refuse_replay(src: Source, batch: TelemetryBatch) -> Applied | None:
    """None if the batch raises the source's cumulative energy, or is newer than its high-water mark and
    no counter in it went down.

    A source is judged by its energy counter, not by its sequence numbers or steps: anyone holding the
    pod's token can post under the sidecar's boot id (which /healthz shows), and a batch with a huge seq,
    or a seq just above the sidecar's with a huge step, would otherwise make every later batch of the
    sidecar a duplicate or "backwards". The source counts the largest cumulative energy it was sent, so a
    batch that adds energy counts whatever its seq and steps (the plausibility ceilings still bound it;
    its steps are taken as sent, as a trainer resumed from a checkpoint sends them), and one that adds
    none changes nothing: an honest sidecar's counters only grow with its seq, so retries, duplicates and
    reordering still count its final counters exactly once."""
    total = batch.energy_joules
    if total - src.energy_j > 1e-6:
        return None
    if batch.seq <= src.seq:
        return Applied(Verdict.DUPLICATE, message=f"seq {batch.seq} already received (have {src.seq})")
    if total - src.energy_j < -1e-6:
        return Applied(Verdict.BACKWARDS, message=f"cumulative energy went down ({src.energy_j} -> {total})")
    if batch.global_step < src.global_step or batch.steps_seen < src.steps_seen:
        return Applied(
            Verdict.BACKWARDS, message=f"steps went down ({src.global_step} -> {batch.global_step})"
        )
    return None
